//! The keys and session of a request, as the API reads them.

use std::sync::Arc;

use oxbase_objects::{Auth, ParseError, ParseResult, SessionUser, code};

use crate::App;
use crate::request::ParseRequest;

impl App {
    /// The request's keys, before its session token is looked up: Parse
    /// counts rate limits in between, so a bad token is counted too.
    pub(crate) fn key_auth(&self, req: &ParseRequest) -> ParseResult<Auth> {
        self.keys.auth(&req.credentials, req.ip)
    }

    /// The user of the request's session token; none for the master key.
    pub(crate) async fn session_of(
        &self,
        auth: &Auth,
        req: &ParseRequest,
    ) -> ParseResult<Option<Arc<SessionUser>>> {
        let Some(token) = req.credentials.session_token.as_deref() else {
            return Ok(None);
        };
        if auth.master {
            return Ok(None);
        }
        // On this route Parse Server looks a token without `r:` up among
        // the legacy tokens of its first releases; oxbase has none.
        if req.segments == ["upgradeToRevocableSession"] && !token.starts_with("r:") {
            return Err(ParseError::new(
                code::INVALID_SESSION_TOKEN,
                "invalid legacy session token",
            ));
        }
        self.objects.session_user(token).await.map(Some)
    }
}
