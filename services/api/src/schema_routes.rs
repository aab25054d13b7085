//! `/schemas`: reading and changing class schemas (master key only).

use crate::App;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::request::ParseRequest;
use crate::routes::Reply;

impl App {
    pub(crate) async fn schemas_route(&self, auth: &Auth, req: &ParseRequest) -> ApiResult<Reply> {
        let _ = (auth, req);
        Err(ApiError::not_supported("/schemas"))
    }
}
