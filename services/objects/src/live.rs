//! What a LiveQuery subscription may see, by Parse's rules for a find:
//! the class's permissions, pointer permissions and protected fields. The
//! ACL of each object is checked per event by the LiveQuery server.

use oxbase_store::{Condition, Filter, Object, QueryValue};
use serde_json::{Map, Value};

use crate::access::{self, Operation};
use crate::auth::Auth;
use crate::error::{ParseError, ParseResult, code};
use crate::layer::{ObjectLayer, restrict_subqueries, validate_class_access};
use crate::query::WhereParser;

/// A subscription's query as the object layer allows it.
#[derive(Debug, Clone)]
pub struct LiveAccess {
    /// The query's `where`, narrowed by what pointer permissions and, on
    /// `_Session`, the subscriber's own sessions require.
    pub filter: Filter,
    /// Fields the subscriber is not sent.
    pub protected: Vec<String>,
    /// The class-level permissions this was worked out from: when they
    /// change, the subscription is checked again.
    pub permissions: Value,
}

impl ObjectLayer {
    /// Checks a LiveQuery subscription as Parse Server does: the class's
    /// `get` permission for a query on one `objectId`, its `find`
    /// permission otherwise, and no protected field in `where` or `watch`.
    /// A `_Session` subscription without the master key sees only the
    /// subscriber's own sessions.
    pub async fn live_access(
        &self,
        auth: &Auth,
        class_name: &str,
        where_: &Map<String, Value>,
        watch: &[String],
    ) -> ParseResult<LiveAccess> {
        validate_class_access(auth, class_name)?;
        let mut filter = WhereParser::new(self.limits()).parse(&Value::Object(where_.clone()))?;
        let view = self.schemas_for(class_name, &[]).await?;
        if !auth.master {
            // As a find's: subqueries read only what the subscriber may.
            restrict_subqueries(auth, &view, &mut filter)?;
        }
        let class = view.get(class_name).map(AsRef::as_ref);
        let op = match where_.get("objectId") {
            Some(Value::String(_)) if where_.len() == 1 => Operation::Get,
            _ => Operation::Find,
        };
        let mut protected = access::protected_fields(auth, class);
        // Before the first sign-up `_User` has no schema, and its email is
        // hidden all the same.
        if class.is_none() && class_name == "_User" && !auth.master {
            protected.push("email".into());
        }
        let watched: Vec<&str> = watch.iter().map(String::as_str).collect();
        access::check_query_fields(class_name, &protected, &filter.fields(), &watched)?;
        filter = filter.and(access::check_class(auth, class, op)?);
        if class_name == "_Session" && !auth.master {
            let user_id = auth.user_id().ok_or_else(|| {
                ParseError::new(code::INVALID_SESSION_TOKEN, "Invalid session token")
            })?;
            filter = filter.and(Filter::field(
                "user",
                Condition::Eq(QueryValue::Pointer {
                    class_name: "_User".into(),
                    object_id: user_id.to_owned(),
                }),
            ));
        }
        Ok(LiveAccess {
            filter,
            protected,
            permissions: class.map_or(Value::Null, |c| c.class_level_permissions.clone()),
        })
    }

    /// The class's permissions as this process knows them now.
    pub fn class_permissions(&self, class_name: &str) -> Value {
        self.schemas()
            .get(class_name)
            .map_or(Value::Null, |c| c.class_level_permissions.clone())
    }

    /// Reads the schemas again when the last read is older than
    /// `max_age`, so permissions changed by other processes are seen.
    pub async fn refresh_schemas(&self, max_age: std::time::Duration) {
        if self.schema_cache().age() > max_age
            && let Err(err) = self.schema_cache().reload().await
        {
            tracing::warn!(%err, "cannot reload the schemas");
        }
    }

    /// Whether some object of `class_name` matches `filter`, read with
    /// master rights: how a subscription's subqueries are answered.
    pub async fn any_match(&self, class_name: &str, filter: Filter) -> ParseResult<bool> {
        Ok(!self
            .find_raw(&oxbase_store::Query::new(class_name).filter(filter).limit(1))
            .await?
            .is_empty())
    }

    /// Removes from an event's object what the subscriber may not see, as
    /// a find's results are cleaned.
    pub fn live_redact(
        &self,
        auth: &Auth,
        class_name: &str,
        object: &mut Object,
        protected: &[String],
    ) {
        access::redact(auth, class_name, object, protected);
    }
}
