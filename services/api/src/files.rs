//! File values: stored as their name, given their URL when read, as Parse
//! Server does (`{mount}/files/{appId}/{name}`), so a deployment's URL can
//! change without rewriting data.

use oxbase_store::Object;
use serde_json::Value;

/// Adds `url` to every File value in the objects, nested ones included.
pub fn expand_urls(objects: &mut [Object], mount_url: &str, app_id: &str) {
    let prefix = format!("{mount_url}/files/{}/", encode_component(app_id));
    for object in objects {
        for value in object.values_mut() {
            expand(value, &prefix);
        }
    }
}

fn expand(value: &mut Value, prefix: &str) {
    match value {
        Value::Object(map) => {
            if map.get("__type").and_then(Value::as_str) == Some("File") {
                if let Some(name) = map.get("name").and_then(Value::as_str) {
                    let url = format!("{prefix}{}", encode_component(name));
                    map.insert("url".into(), Value::String(url));
                }
                return;
            }
            map.values_mut().for_each(|v| expand(v, prefix));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| expand(v, prefix)),
        _ => {}
    }
}

/// JavaScript's `encodeURIComponent`.
fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls_are_added_everywhere() {
        let mut objects = vec![
            json!({
                "f": {"__type": "File", "name": "a b.txt"},
                "list": [{"__type": "File", "name": "c.png", "url": "http://old/c.png"}],
                "nested": {"g": {"__type": "File", "name": "é"}}
            })
            .as_object()
            .unwrap()
            .clone(),
        ];
        expand_urls(&mut objects, "http://h/parse", "app");
        assert_eq!(objects[0]["f"]["url"], "http://h/parse/files/app/a%20b.txt");
        assert_eq!(
            objects[0]["list"][0]["url"],
            "http://h/parse/files/app/c.png"
        );
        assert_eq!(
            objects[0]["nested"]["g"]["url"],
            "http://h/parse/files/app/%C3%A9"
        );
    }
}

impl crate::App {
    pub(crate) async fn files_route(
        &self,
        auth: &crate::auth::Auth,
        req: &crate::request::ParseRequest,
    ) -> crate::error::ApiResult<crate::routes::Reply> {
        let _ = (auth, req);
        Err(crate::error::ApiError::not_supported("/files"))
    }
}
