//! Parse ACLs and the permission lists backends store beside each object.

use serde_json::Value;

/// The `_rperm` and `_wperm` lists of an object's ACL: the ids (`*`, user
/// ids, `role:Name`) that may read and write it. `None` means no ACL, which
/// Parse treats as public.
pub fn permissions(acl: Option<&Value>) -> (Option<Vec<String>>, Option<Vec<String>>) {
    let Some(Value::Object(entries)) = acl else {
        return (None, None);
    };
    let granted = |right: &str| {
        entries
            .iter()
            .filter(|(_, grant)| grant.get(right).and_then(Value::as_bool) == Some(true))
            .map(|(id, _)| id.clone())
            .collect::<Vec<_>>()
    };
    (Some(granted("read")), Some(granted("write")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_follow_the_acl() {
        let acl = json!({"*": {"read": true}, "u1": {"read": true, "write": true}, "role:Admin": {"write": true}});
        let (read, write) = permissions(Some(&acl));
        assert_eq!(read.unwrap(), vec!["*", "u1"]);
        assert_eq!(write.unwrap(), vec!["u1", "role:Admin"]);
        assert_eq!(permissions(None), (None, None));
    }
}
