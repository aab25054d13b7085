//! `POST /users` with the `authData` of an existing user: Parse logs that
//! user in rather than signing up a new one (`Parse.User.logInWith`).
//! The rules are the object layer's (`oxbase_objects::AuthDataLogIn`);
//! this runs beforeLogin before them and answers as `/login` does. As in
//! Parse Server, only `/login` runs afterLogin.

use oxbase_objects::{Auth, ParseResult};
use oxbase_proto::TriggerName;
use serde_json::Value;

use crate::App;
use crate::request::ParseRequest;
use crate::routes::Reply;

impl App {
    /// The log-in's reply, or `None` when the request signs up a new user.
    pub(crate) async fn auth_data_log_in(
        &self,
        auth: &Auth,
        req: &ParseRequest,
    ) -> ParseResult<Option<Reply>> {
        let Some(login) = self.objects.auth_data_log_in(auth, &req.body).await? else {
            return Ok(None);
        };
        // As in Parse, beforeLogin sees the user before any authData change
        // is stored, and may still refuse.
        self.session_trigger(auth, req, TriggerName::BeforeLogin, login.user(), None)
            .await?;
        let mut reply = match self.objects.open_auth_data_session(auth, &login).await? {
            Some(token) => self.user_reply(auth, req, login.user_id(), token).await?,
            None => Reply::ok(Value::Object(
                self.user_object(auth, req, login.user_id()).await?,
            )),
        };
        if let Value::Object(body) = &mut reply.body {
            body.insert("authDataResponse".into(), login.auth_data_response());
        }
        Ok(Some(reply))
    }
}
