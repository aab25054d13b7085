//! Who may do what to a class and its objects: class-level permissions
//! (with pointer permissions and protected fields) and the ACL filters
//! that the store applies inside its queries.

use oxbase_store::{ClassSchema, Condition, Filter, Object, QueryValue};
use serde_json::{Map, Value};

use crate::auth::Auth;
use crate::error::{ParseError, ParseResult, code};

/// The operations class-level permissions govern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Get,
    Find,
    Count,
    Create,
    Update,
    Delete,
    AddField,
}

impl Operation {
    fn key(self) -> &'static str {
        match self {
            Operation::Get => "get",
            Operation::Find => "find",
            Operation::Count => "count",
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::AddField => "addField",
        }
    }

    fn is_read(self) -> bool {
        matches!(self, Operation::Get | Operation::Find | Operation::Count)
    }
}

/// Checks a class-level permission. `Ok(Filter::All)` when the operation
/// is granted outright; a filter on pointer fields when only pointer
/// permissions (`readUserFields`, `writeUserFields`, `pointerFields`)
/// grant it, which the query or write must then match.
pub(crate) fn check_class(
    auth: &Auth,
    class: Option<&ClassSchema>,
    op: Operation,
) -> ParseResult<Filter> {
    if auth.master {
        return Ok(Filter::All);
    }
    let Some(clp) = class.and_then(|c| c.class_level_permissions.as_object()) else {
        return Ok(Filter::All);
    };
    let class_name = class.map(|c| c.class_name.as_str()).unwrap_or_default();
    // An operation the permissions do not name is closed, as Parse Server
    // fills it in when it loads a class.
    let closed = Map::new();
    let perms = clp
        .get(op.key())
        .and_then(Value::as_object)
        .unwrap_or(&closed);
    if granted(perms, auth) {
        return Ok(Filter::All);
    }
    if perms.get("requiresAuthentication") == Some(&Value::Bool(true)) {
        if auth.user.is_some() {
            return Ok(Filter::All);
        }
        return Err(ParseError::new(
            code::OBJECT_NOT_FOUND,
            "Permission denied, user needs to be authenticated.",
        ));
    }
    let mut fields: Vec<&str> = string_list(perms.get("pointerFields"));
    let user_fields = if op.is_read() {
        "readUserFields"
    } else {
        "writeUserFields"
    };
    fields.extend(string_list(clp.get(user_fields)));
    // Pointer permissions name existing objects, so they cannot grant
    // creating one or adding a field.
    let on_objects = !matches!(op, Operation::Create | Operation::AddField);
    if let (Some(user_id), false, true) = (auth.user_id(), fields.is_empty(), on_objects) {
        let me = QueryValue::Pointer {
            class_name: "_User".into(),
            object_id: user_id.to_owned(),
        };
        // A pointer field, or an array of pointers, naming the user.
        return Ok(Filter::Or(
            fields
                .into_iter()
                .map(|field| Filter::field(field, Condition::Eq(me.clone())))
                .collect(),
        ));
    }
    Err(denied(op, class_name))
}

pub fn denied(op: Operation, class_name: &str) -> ParseError {
    ParseError::new(
        code::OPERATION_FORBIDDEN,
        format!(
            "Permission denied for action {} on class {class_name}.",
            op.key()
        ),
    )
}

fn granted(perms: &Map<String, Value>, auth: &Auth) -> bool {
    auth.principals()
        .iter()
        .any(|p| perms.get(p) == Some(&Value::Bool(true)))
}

fn string_list(value: Option<&Value>) -> Vec<&str> {
    value
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The ACL filter for reading (or, with `write`, writing) objects.
pub(crate) fn acl_filter(auth: &Auth, write: bool) -> Filter {
    if auth.master {
        Filter::All
    } else {
        Filter::Permission {
            write,
            principals: auth.principals(),
        }
    }
}

/// The fields of a class a request may not see: the union of the
/// `protectedFields` entries that apply to it, less those any applying
/// entry leaves visible (Parse's rule: the most permissive entry wins).
pub(crate) fn protected_fields(auth: &Auth, class: Option<&ClassSchema>) -> Vec<String> {
    if auth.master {
        return Vec::new();
    }
    let class_name = class.map(|c| c.class_name.as_str()).unwrap_or_default();
    let configured = class
        .and_then(|c| c.class_level_permissions.get("protectedFields"))
        .and_then(Value::as_object);
    let mut entries: Vec<Vec<&str>> = Vec::new();
    let principals = auth.principals();
    // Parse Server hides users' email addresses from everyone but
    // themselves, on top of what the class's permissions protect.
    let mut star: Vec<&str> = if class_name == "_User" {
        vec!["email"]
    } else {
        Vec::new()
    };
    if let Some(configured) = configured {
        for (who, fields) in configured {
            if who == "*" {
                star.extend(string_list(Some(fields)));
            } else if principals.contains(who) || (who == "authenticated" && auth.user.is_some()) {
                entries.push(string_list(Some(fields)));
            }
        }
    }
    entries.insert(0, star);
    let Some(first) = entries.first() else {
        return Vec::new();
    };
    first
        .iter()
        .filter(|field| entries.iter().all(|entry| entry.contains(field)))
        .map(|f| (*f).to_owned())
        .collect()
}

/// Removes what no client may see: internal fields (`_hashed_password`,
/// `_email_verify_token`...), protected fields, and, on `_User`, other
/// users' auth data. A user always sees their own object in full. The
/// maintenance key sees everything, the password's hash as `password`, as
/// in Parse Server.
pub(crate) fn redact(auth: &Auth, class_name: &str, object: &mut Object, protected: &[String]) {
    if auth.maintenance {
        if let Some(hash) = object.remove("_hashed_password") {
            object.insert("password".into(), hash);
        }
        return;
    }
    object.retain(|key, _| !key.starts_with('_'));
    if class_name == "_User" {
        object.remove("password");
        let own = auth.master
            || auth.user_id().is_some()
                && object.get("objectId").and_then(Value::as_str) == auth.user_id();
        if own {
            crate::auth_data::redact_auth_data(auth, object);
            return;
        }
        object.remove("authData");
    }
    for field in protected {
        object.remove(field);
    }
}

/// Refuses queries that would reveal protected fields through `where` or
/// `order`.
pub(crate) fn check_query_fields(
    class_name: &str,
    protected: &[String],
    where_fields: &[&str],
    order_fields: &[&str],
) -> ParseResult<()> {
    for field in where_fields.iter().chain(order_fields) {
        let root = field.split('.').next().unwrap_or(field);
        if protected.iter().any(|p| p == root) {
            return Err(ParseError::new(
                code::OPERATION_FORBIDDEN,
                format!("This user is not allowed to query {root} on class {class_name}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::auth::SessionUser;

    fn class(clp: Value) -> ClassSchema {
        let mut schema = ClassSchema::new("Doc");
        schema.class_level_permissions = clp;
        schema
    }

    fn user(id: &str, roles: &[&str]) -> Auth {
        Auth {
            user: Some(Arc::new(SessionUser {
                id: id.into(),
                session_token: "t".into(),
                anonymous: false,
                roles: roles.iter().map(|r| format!("role:{r}")).collect(),
            })),
            ..Auth::default()
        }
    }

    #[test]
    fn class_permissions() {
        let c = class(json!({
            "find": {"role:Staff": true},
            "get": {"requiresAuthentication": true},
            "update": {"u1": true},
            "delete": {},
            "count": {"*": true},
        }));
        let anon = Auth::default();
        assert!(check_class(&anon, Some(&c), Operation::Count).is_ok());
        assert!(
            check_class(&anon, Some(&c), Operation::Create).is_err(),
            "missing means closed"
        );
        let err = |r: ParseResult<Filter>| match r.unwrap_err() {
            ParseError::Parse { code, .. } => code,
            other => panic!("{other:?}"),
        };
        assert_eq!(err(check_class(&anon, Some(&c), Operation::Find)), 119);
        assert_eq!(err(check_class(&anon, Some(&c), Operation::Get)), 101);
        assert!(check_class(&user("u2", &[]), Some(&c), Operation::Get).is_ok());
        assert!(check_class(&user("u2", &["Staff"]), Some(&c), Operation::Find).is_ok());
        assert_eq!(
            err(check_class(&user("u2", &[]), Some(&c), Operation::Update)),
            119
        );
        assert!(check_class(&user("u1", &[]), Some(&c), Operation::Update).is_ok());
        assert_eq!(
            err(check_class(&user("u1", &[]), Some(&c), Operation::Delete)),
            119
        );
        assert!(check_class(&Auth::master(), Some(&c), Operation::Delete).is_ok());
    }

    #[test]
    fn pointer_permissions_become_filters() {
        let c = class(json!({"find": {}, "readUserFields": ["owner"]}));
        let filter = check_class(&user("u1", &[]), Some(&c), Operation::Find).unwrap();
        assert_eq!(
            filter,
            Filter::Or(vec![Filter::field(
                "owner",
                Condition::Eq(QueryValue::Pointer {
                    class_name: "_User".into(),
                    object_id: "u1".into()
                })
            )])
        );
        assert!(check_class(&Auth::default(), Some(&c), Operation::Find).is_err());
    }

    #[test]
    fn protected_fields_most_permissive_entry_wins() {
        let c =
            class(json!({"protectedFields": {"*": ["secret", "phone"], "role:Staff": ["secret"]}}));
        assert_eq!(
            protected_fields(&Auth::default(), Some(&c)),
            ["secret", "phone"]
        );
        assert_eq!(
            protected_fields(&user("u", &["Staff"]), Some(&c)),
            ["secret"]
        );
        assert!(protected_fields(&Auth::master(), Some(&c)).is_empty());
        let users = ClassSchema::new("_User");
        let mut me = Object::new();
        me.insert("objectId".into(), json!("u"));
        me.insert("email".into(), json!("u@x.io"));
        me.insert("_hashed_password".into(), json!("$2b$..."));
        let hidden = protected_fields(&user("v", &[]), Some(&users));
        let mut other = me.clone();
        redact(&user("v", &[]), "_User", &mut other, &hidden);
        assert_eq!(other, json!({"objectId": "u"}).as_object().unwrap().clone());
        redact(&user("u", &[]), "_User", &mut me, &hidden);
        assert_eq!(
            me,
            json!({"objectId": "u", "email": "u@x.io"})
                .as_object()
                .unwrap()
                .clone()
        );
    }
}
