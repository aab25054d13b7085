//! `/schemas`: reading and changing class schemas, master key only; the
//! object layer applies Parse's rules (`schema_admin.rs`).

use axum::http::Method;
use oxbase_objects::{Auth, ParseResult};

use crate::App;
use crate::request::ParseRequest;
use crate::routes::Reply;

impl App {
    pub(crate) async fn schemas_route(
        &self,
        auth: &Auth,
        req: &ParseRequest,
    ) -> ParseResult<Reply> {
        auth.require_master()?;
        let segments: Vec<&str> = req.segments.iter().map(String::as_str).collect();
        let body = match (&req.method, segments.as_slice()) {
            (&Method::GET, ["schemas"]) => self.objects.all_schemas().await?,
            (&Method::GET, ["schemas", class]) => self.objects.one_schema(class).await?,
            (&Method::POST, ["schemas"]) => {
                self.objects.create_schema(auth, None, &req.body).await?
            }
            (&Method::POST, ["schemas", class]) => {
                self.objects
                    .create_schema(auth, Some(class), &req.body)
                    .await?
            }
            (&Method::PUT, ["schemas", class]) => {
                self.objects.update_schema(auth, class, &req.body).await?
            }
            (&Method::DELETE, ["schemas", class]) => {
                self.objects.delete_schema(auth, class).await?
            }
            _ => {
                return Err(self.no_route(req));
            }
        };
        Ok(Reply::ok(body))
    }
}
