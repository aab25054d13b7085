//! The user and session routes that are not plain class routes:
//! sign-up, `/login`, `/loginAs`, `/verifyPassword`, `/logout`,
//! `/users/me`, `/sessions/me`, `/upgradeToRevocableSession`, and the
//! account mails: `/requestPasswordReset` and `/verificationEmailRequest`.

use axum::http::StatusCode;
use oxbase_objects::{
    Auth, Challenge, FindOptions, LogIn, ParseError, ParseResult, WriteEffect, WriteReply, code,
    email_not_configured, invalid_token, redact_auth_data,
};
use oxbase_proto::TriggerName;
use oxbase_store::{Condition, Filter, Object, QueryValue};
use serde_json::{Map, Value, json};

use crate::App;
use crate::request::ParseRequest;
use crate::routes::Reply;

fn text_param<'a>(req: &'a ParseRequest, key: &str) -> Option<&'a str> {
    req.params
        .get(key)
        .or_else(|| req.body.get(key))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// A value as JavaScript's truthiness sees it, as Parse reads flags such
/// as `ignoreEmailVerification`.
fn truthy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|n| n != 0.0 && !n.is_nan()),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(_) | Value::Object(_)) => true,
    }
}

/// A log-in's credentials, from the query string or the body.
fn log_in_of<'a>(auth: &Auth, req: &'a ParseRequest) -> LogIn<'a> {
    LogIn {
        username: text_param(req, "username"),
        email: text_param(req, "email"),
        password: req
            .params
            .get("password")
            .or_else(|| req.body.get("password"))
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty()),
        master: auth.has_master_key(),
        // Either key, as in Parse; from anyone else the flag means nothing.
        ignore_email_verification: auth.master
            && truthy(
                req.params
                    .get("ignoreEmailVerification")
                    .or_else(|| req.body.get("ignoreEmailVerification")),
            ),
    }
}

impl App {
    /// `POST /users` (and `POST /classes/_User`): the user and its first
    /// session are created together, unless its `authData` logs in a user
    /// who exists.
    pub(crate) async fn signup(&self, auth: &Auth, req: &ParseRequest) -> ParseResult<Reply> {
        if let Some(reply) = self.auth_data_log_in(auth, req).await? {
            return Ok(reply);
        }
        let user = self.prepare_create(auth, req, "_User").await?;
        let user_id = user.object_id().unwrap_or_default().to_owned();
        let effect = WriteEffect::of(&user);
        let location = Some(format!("{}{}/users/{user_id}", req.origin, self.mount));
        if self.objects.signup_waits_for_email(&user) {
            // As Parse: the user is saved without a session, and the
            // verification link is its way in.
            let reply = self.objects.commit_one(user).await?;
            self.mail_verification(&effect);
            if self
                .objects
                .settings()
                .email
                .prevent_signup_with_unverified_email
            {
                return Err(ParseError::new(
                    code::EMAIL_NOT_FOUND,
                    "User email is not verified.",
                ));
            }
            return Ok(Reply {
                status: StatusCode::CREATED,
                body: reply.body(),
                location,
                headers: Vec::new(),
            });
        }
        let (session, token) = self
            .objects
            .prepare_signup_session(&user, auth.installation_id.as_deref())
            .await?;
        let mut replies = self.objects.commit(vec![user, session], true).await?;
        replies.truncate(1);
        let Some(Ok(WriteReply::Created { mut body, .. })) = replies.pop() else {
            return Err(ParseError::internal("sign-up committed without a result"));
        };
        body["sessionToken"] = Value::from(token);
        self.mail_verification(&effect);
        Ok(Reply {
            status: StatusCode::CREATED,
            body,
            location,
            headers: Vec::new(),
        })
    }

    /// Mails the verification link of a committed write that gave a user
    /// a new token, in the background: the user is read again for the
    /// address and token, as Parse Server does.
    pub(crate) fn mail_verification(&self, effect: &WriteEffect) {
        let (Some(user_id), Some(mailer)) = (effect.verify_email_of.clone(), self.mailer.clone())
        else {
            return;
        };
        let objects = std::sync::Arc::clone(&self.objects);
        tokio::spawn(async move {
            match objects.verification_mail(&user_id).await {
                Ok(Some(mail)) => mailer.send(mail),
                Ok(None) => {}
                Err(err) => {
                    tracing::error!(user_id, error = %err, "cannot read a user to mail its verification link");
                }
            }
        });
    }

    /// `POST /requestPasswordReset` (`email`, or an expired link's
    /// `token`): runs the `beforePasswordResetRequest` trigger on the user
    /// it names, whose error refuses it, then mails a reset link,
    /// answering `{}` as Parse does.
    pub(crate) async fn request_password_reset(
        &self,
        auth: &Auth,
        req: &ParseRequest,
    ) -> ParseResult<Reply> {
        let mailer = self.mailer.as_ref().ok_or_else(email_not_configured)?;
        let request = self
            .objects
            .password_reset_request(req.body.get("email"), req.body.get("token"))
            .await?;
        if let Some(user) = &request.user {
            self.session_trigger(
                auth,
                req,
                TriggerName::BeforePasswordResetRequest,
                user,
                None,
            )
            .await?;
        }
        if let Some(mail) = self.objects.send_password_reset(&request.email).await? {
            mailer.send(mail);
        }
        Ok(Reply::ok(json!({})))
    }

    /// The mailed verification link (Parse's `verifyEmail`): the user
    /// holding `token` gets `emailVerified: true` through the normal write
    /// path, as the server (Parse's maintenance key): the user's beforeSave
    /// sees it (without the master key) and may change or refuse it, and
    /// its event runs afterSave. `false` when no user holds the token.
    pub(crate) async fn verify_email(&self, req: &ParseRequest, token: &str) -> ParseResult<bool> {
        let Some(verification) = self.objects.email_verification(token).await? else {
            return Ok(false);
        };
        let body = Map::from_iter([("emailVerified".to_owned(), Value::Bool(true))]);
        let shown_as = self.caller(&Auth::default(), req).await;
        let mut context = req.context.clone();
        let hooked = self
            .before_save_as(
                &Auth::master(),
                shown_as,
                "_User",
                Some(&verification.user_id),
                &body,
                &mut context,
            )
            .await?;
        let mut body = hooked.map_or(body, |(body, _)| body);
        body.entry("emailVerified").or_insert(Value::Bool(true));
        let mut write = self
            .objects
            .prepare_email_verification(&verification, &body)
            .await?;
        write.set_cloud_context(context);
        let effect = WriteEffect::of(&write);
        match self.objects.commit_one(write).await {
            Ok(_) => {}
            // Another click spent the token first.
            Err(ParseError::Parse {
                code: code::OBJECT_NOT_FOUND,
                ..
            }) => return Ok(false),
            Err(err) => return Err(err),
        }
        self.objects
            .after_writes(std::slice::from_ref(&effect))
            .await;
        self.mail_verification(&effect);
        Ok(true)
    }

    /// `POST /verificationEmailRequest` (`email`): mails a new verification
    /// link, answering `{}` as Parse does.
    pub(crate) async fn verification_email_request(
        &self,
        req: &ParseRequest,
    ) -> ParseResult<Reply> {
        let mailer = self.mailer.as_ref().ok_or_else(email_not_configured)?;
        if let Some(mail) = self
            .objects
            .request_verification_email(req.body.get("email"))
            .await?
        {
            mailer.send(mail);
        }
        Ok(Reply::ok(json!({})))
    }

    /// `GET` or `POST /login`, with the body's `authData` (an enrolled
    /// user's MFA token) checked after the password.
    pub(crate) async fn login(&self, auth: &Auth, req: &ParseRequest) -> ParseResult<Reply> {
        let (user_id, user, auth_data) = self
            .objects
            .check_log_in(auth, log_in_of(auth, req), req.body.get("authData"))
            .await?;
        self.session_trigger(auth, req, TriggerName::BeforeLogin, &user, None)
            .await?;
        self.objects.store_log_in_auth_data(&auth_data).await?;
        let token = self.objects.open_log_in_session(auth, &user_id).await?;
        let mut reply = self.user_reply(auth, req, &user_id, token).await?;
        if let Value::Object(user) = &reply.body {
            self.session_trigger(auth, req, TriggerName::AfterLogin, user, Some(user))
                .await?;
        }
        if let (Value::Object(body), Some(response)) =
            (&mut reply.body, auth_data.auth_data_response())
        {
            body.insert("authDataResponse".into(), response);
        }
        Ok(reply)
    }

    /// `POST /challenge`: the user named by username and password, or by
    /// `authData`, and each provider's answer to `challengeData`.
    pub(crate) async fn challenge(&self, auth: &Auth, req: &ParseRequest) -> ParseResult<Reply> {
        let by_password = Challenge::of(&req.body)? == Challenge::Password;
        if by_password {
            self.objects.verify_log_in(log_in_of(auth, req)).await?;
        }
        let body = self.objects.challenge(auth, &req.body, by_password).await?;
        Ok(Reply::ok(body))
    }

    /// `GET` or `POST /verifyPassword`: the user, without a session, when
    /// the password is right. Failures count for the account lockout, as
    /// a log-in's do.
    pub(crate) async fn verify_password(
        &self,
        auth: &Auth,
        req: &ParseRequest,
    ) -> ParseResult<Reply> {
        let (user_id, _) = self.objects.verify_log_in(log_in_of(auth, req)).await?;
        let user = self.user_object(auth, req, &user_id).await?;
        Ok(Reply::ok(Value::Object(user)))
    }

    /// `POST /loginAs`: the master key opens a session for any user and
    /// gets it as `/login` answers.
    pub(crate) async fn login_as(&self, auth: &Auth, req: &ParseRequest) -> ParseResult<Reply> {
        // Parse Server 9 answers both refusals with its sanitized message.
        if !auth.has_master_key() || auth.read_only {
            return Err(ParseError::new(
                code::OPERATION_FORBIDDEN,
                "Permission denied",
            ));
        }
        let user_id = text_param(req, "userId").ok_or_else(|| {
            ParseError::new(
                code::INVALID_VALUE,
                "userId must not be empty, null, or undefined",
            )
        })?;
        let token = self.objects.open_session_as(auth, user_id).await?;
        self.user_reply(auth, req, user_id, token).await
    }

    /// `POST /upgradeToRevocableSession`: the new session, as the user
    /// reads it.
    pub(crate) async fn upgrade_session(&self, auth: &Auth) -> ParseResult<Reply> {
        let token = self.objects.upgrade_session(auth).await?;
        let mut options = FindOptions::for_find(&Map::new(), self.objects.limits())?;
        options.filter = Filter::field("sessionToken", Condition::Eq(QueryValue::String(token)));
        let (mut found, _) = self.objects.find(auth, "_Session", &options).await?;
        let session = found
            .pop()
            .ok_or_else(|| ParseError::internal("an upgraded session cannot be read"))?;
        Ok(Reply::ok(Value::Object(session)))
    }

    /// The user's own object with their session token, as `/login` and
    /// `/users/me` answer.
    pub(crate) async fn user_reply(
        &self,
        auth: &Auth,
        req: &ParseRequest,
        user_id: &str,
        token: String,
    ) -> ParseResult<Reply> {
        let mut object = self.user_object(auth, req, user_id).await?;
        object.insert("sessionToken".into(), Value::from(token));
        Ok(Reply::ok(Value::Object(object)))
    }

    /// The user's own object, as they read it: the master key also sees
    /// their MFA secret, as in Parse.
    pub(crate) async fn user_object(
        &self,
        auth: &Auth,
        req: &ParseRequest,
        user_id: &str,
    ) -> ParseResult<Object> {
        let mut object: Object = self
            .objects
            .get(
                &Auth::master(),
                "_User",
                user_id,
                &FindOptions::for_get(&Map::new(), self.objects.limits())?,
            )
            .await?;
        redact_auth_data(auth, &mut object);
        let mut objects = [object];
        self.expand_files(req, &mut objects);
        let [object] = objects;
        Ok(object)
    }

    /// `GET /users/me`.
    pub(crate) async fn me(&self, auth: &Auth, req: &ParseRequest) -> ParseResult<Reply> {
        let user = auth.user.as_ref().ok_or_else(invalid_token)?;
        self.user_reply(auth, req, &user.id, user.session_token.clone())
            .await
    }

    /// `POST /logout`: the session is deleted; its token stops working.
    pub(crate) async fn logout(&self, auth: &Auth, req: &ParseRequest) -> ParseResult<Reply> {
        if let Some(session) = self.objects.log_out(auth).await? {
            self.session_trigger(auth, req, TriggerName::AfterLogout, &session, None)
                .await?;
        }
        Ok(Reply::ok(json!({})))
    }

    /// `GET /sessions/me`.
    pub(crate) async fn session_me(&self, auth: &Auth, req: &ParseRequest) -> ParseResult<Reply> {
        let user = auth.user.as_ref().ok_or_else(invalid_token)?;
        let mut options = FindOptions::for_find(&req.params, self.objects.limits())?;
        options.filter = Filter::field(
            "sessionToken",
            Condition::Eq(QueryValue::String(user.session_token.clone())),
        );
        let (mut found, _) = self.objects.find(auth, "_Session", &options).await?;
        let session = found.pop().ok_or_else(invalid_token)?;
        Ok(Reply::ok(Value::Object(session)))
    }
}
