//! `/config`: Parse Config parameters; the object layer keeps them
//! (`global_config.rs`).

use axum::http::Method;
use oxbase_objects::{Auth, ParseError, ParseResult, code};
use serde_json::json;

use crate::App;
use crate::request::ParseRequest;
use crate::routes::Reply;

impl App {
    pub(crate) async fn config_route(&self, auth: &Auth, req: &ParseRequest) -> ParseResult<Reply> {
        match req.method {
            Method::GET => self.objects.get_config(auth).await.map(Reply::ok),
            Method::PUT => {
                auth.require_master()?;
                if auth.read_only {
                    return Err(ParseError::new(
                        code::OPERATION_FORBIDDEN,
                        "read-only masterKey isn't allowed to update the config.",
                    ));
                }
                let changes = oxbase_objects::config_changes(&req.body)?;
                self.objects.update_config(changes).await?;
                Ok(Reply::ok(json!({ "result": true })))
            }
            _ => Err(ParseError::NoRoute {
                method: req.method.to_string(),
                path: format!("{}/config", self.mount),
            }),
        }
    }
}
