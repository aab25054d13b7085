//! Session tokens: who a request is, beyond its keys.

use crate::App;
use crate::auth::{Auth, KeyLevel};
use crate::error::ApiResult;
use crate::request::ParseRequest;

impl App {
    /// The keys decide the master level; a session token names the user.
    pub(crate) async fn authenticate(&self, req: &ParseRequest) -> ApiResult<Auth> {
        let level = self.keys.authenticate(&req.credentials, req.ip)?;
        Ok(Auth {
            master: level != KeyLevel::Client,
            read_only: level == KeyLevel::ReadOnlyMaster,
            installation_id: req.credentials.installation_id.clone(),
            user: None,
        })
    }
}
