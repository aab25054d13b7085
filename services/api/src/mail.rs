//! The account mails (email verification, password reset) over SMTP, with
//! Parse Server's links: `<publicServerURL>/apps/<appId>/verify_email?token=`
//! and `.../request_password_reset?token=`. Mails go out in the background,
//! as Parse Server's adapters do, so a slow SMTP server never holds up the
//! request; a mail that cannot be sent after a few tries is logged with
//! its recipient.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use oxbase_kit::Config;
use oxbase_objects::{AccountMail, EmailConfig, MailKind, SmtpTls};

/// Tries per mail, the first included, with a doubling pause between them.
const ATTEMPTS: u32 = 3;
const FIRST_PAUSE: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub(crate) struct Mailer(Arc<Inner>);

struct Inner {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    app_name: String,
    /// Parse's `publicServerURL`, without a trailing slash.
    public_url: String,
    app_id: String,
}

/// Percent-encodes a URL query or path component, as JavaScript's
/// `encodeURIComponent` does for Parse's links.
pub(crate) fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl Mailer {
    /// The mailer `[email]` describes; `Ok(None)` without an SMTP server.
    /// Links need `public_server_url`, as Parse Server requires
    /// `publicServerURL` with an email adapter.
    pub(crate) fn from_config(config: &Config) -> Result<Option<Self>, String> {
        let email: EmailConfig = config.section();
        let Some(host) = &email.smtp_host else {
            return Ok(None);
        };
        let public_url = config
            .public_server_url
            .as_deref()
            .ok_or("public_server_url is required to send account mails ([email] smtp_host)")?
            .trim_end_matches('/')
            .to_owned();
        let from: Mailbox = email
            .from
            .as_deref()
            .unwrap_or_default()
            .parse()
            .map_err(|err| format!("email.from: {err}"))?;
        let builder = match email.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                .map_err(|err| format!("email.smtp_host: {err}"))?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
                .map_err(|err| format!("email.smtp_host: {err}"))?,
        };
        let port = match (email.smtp_port, email.tls) {
            (0, SmtpTls::None) => 25,
            (0, SmtpTls::Starttls) => 587,
            (0, SmtpTls::Tls) => 465,
            (port, _) => port,
        };
        let mut builder = builder
            .port(port)
            .timeout(Some(Duration::from_secs(email.timeout_secs.max(1))));
        if let Some(username) = &email.username {
            let password = email.password.as_ref().map(|p| p.expose()).unwrap_or("");
            builder = builder.credentials(Credentials::new(username.clone(), password.to_owned()));
        }
        Ok(Some(Mailer(Arc::new(Inner {
            transport: builder.build(),
            from,
            app_name: email.app_name.clone().unwrap_or_default(),
            public_url,
            app_id: config.app_id.clone(),
        }))))
    }

    pub(crate) fn app_name(&self) -> &str {
        &self.0.app_name
    }

    pub(crate) fn public_url(&self) -> &str {
        &self.0.public_url
    }

    /// Parse's link for a mail's token.
    fn link(&self, mail: &AccountMail) -> String {
        let page = match mail.kind {
            MailKind::VerifyEmail => "verify_email",
            MailKind::PasswordReset => "request_password_reset",
        };
        format!(
            "{}/apps/{}/{page}?token={}",
            self.0.public_url,
            encode_component(&self.0.app_id),
            encode_component(&mail.token)
        )
    }

    fn message(&self, mail: &AccountMail) -> Result<Message, String> {
        let app = &self.0.app_name;
        let link = self.link(mail);
        let (subject, text) = match mail.kind {
            MailKind::VerifyEmail => (
                format!("Verify your email for {app}"),
                format!(
                    "Hello,\n\nplease confirm {} as the email address of your {app} account by opening this link:\n\n{link}\n\nIf you did not sign up, ignore this mail.\n",
                    mail.to
                ),
            ),
            MailKind::PasswordReset => {
                let account = mail
                    .username
                    .as_deref()
                    .map(|name| format!(" ({name})"))
                    .unwrap_or_default();
                (
                    format!("Reset your password for {app}"),
                    format!(
                        "Hello,\n\na new password was asked for your {app} account{account}. Choose it here:\n\n{link}\n\nIf you did not ask for it, ignore this mail: your password stays as it is.\n"
                    ),
                )
            }
        };
        let to: Mailbox = mail
            .to
            .parse()
            .map_err(|err| format!("bad address: {err}"))?;
        Message::builder()
            .from(self.0.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(text)
            .map_err(|err| err.to_string())
    }

    /// Sends in the background, trying again on failure; the request
    /// answers without waiting, as Parse Server's does.
    pub(crate) fn send(&self, mail: AccountMail) {
        let mailer = self.clone();
        tokio::spawn(async move { mailer.deliver(mail).await });
    }

    async fn deliver(&self, mail: AccountMail) {
        let kind = match mail.kind {
            MailKind::VerifyEmail => "email verification",
            MailKind::PasswordReset => "password reset",
        };
        let message = match self.message(&mail) {
            Ok(message) => message,
            Err(err) => {
                tracing::error!(to = %mail.to, kind, error = %err, "cannot build an account mail");
                return;
            }
        };
        let mut pause = FIRST_PAUSE;
        for attempt in 1..=ATTEMPTS {
            match self.0.transport.send(message.clone()).await {
                Ok(_) => {
                    tracing::info!(to = %mail.to, kind, "account mail sent");
                    return;
                }
                Err(err) if attempt < ATTEMPTS => {
                    tracing::warn!(to = %mail.to, kind, attempt, error = %err, "cannot send an account mail; trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(err) => {
                    tracing::error!(to = %mail.to, kind, attempts = ATTEMPTS, error = %err, "cannot send an account mail; giving up");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_encoded_as_javascript_does() {
        assert_eq!(encode_component("aZ09-_.!~*'()"), "aZ09-_.!~*'()");
        assert_eq!(encode_component("a b/c?d&é"), "a%20b%2Fc%3Fd%26%C3%A9");
    }

    #[test]
    fn links_are_parse_servers() {
        let mut config = Config {
            app_id: "my app".into(),
            public_server_url: Some("https://example.com/parse/".into()),
            ..Config::default()
        };
        config.update_section::<EmailConfig>(|email| {
            email.smtp_host = Some("localhost".into());
            email.tls = SmtpTls::None;
            email.from = Some("App <no-reply@example.com>".into());
            email.app_name = Some("App".into());
        });
        let mailer = Mailer::from_config(&config).unwrap().unwrap();
        let mail = AccountMail {
            kind: MailKind::PasswordReset,
            to: "a@example.com".into(),
            username: Some("a".into()),
            token: "abc".into(),
        };
        assert_eq!(
            mailer.link(&mail),
            "https://example.com/parse/apps/my%20app/request_password_reset?token=abc"
        );
        assert!(mailer.message(&mail).is_ok());
    }
}
