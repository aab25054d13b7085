//! LDAP, as Parse Server 9's `ldap` adapter checks it: the client sends
//! `{id, password}`; oxbase binds to the directory as that user (`uid=<id>,
//! <suffix>`, or the configured `dn` with `{{id}}` replaced), and, when
//! `group_cn` and `group_filter` are set, searches under `suffix` (bound as
//! the user) for a group of that `cn`. The password is never stored.
//!
//! `ldaps://` speaks TLS (rustls), checking the directory's certificate
//! against `tls_ca_file` or the system's roots; `ldap://` is plain text.

use std::sync::Arc;
use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Map, Value};

use super::config::ProviderConfig;
use crate::error::{ParseError, ParseResult, code};

/// A directory that does not answer within this fails the sign-in.
const TIMEOUT: Duration = Duration::from_secs(10);
/// LDAP's `invalidCredentials` result code.
const INVALID_CREDENTIALS: u32 = 49;

fn wrong_credentials() -> ParseError {
    ParseError::new(code::OBJECT_NOT_FOUND, "LDAP: Wrong username or password")
}

fn group_search_failed() -> ParseError {
    ParseError::new(code::INTERNAL_SERVER_ERROR, "LDAP group search failed")
}

/// Parse's message for other failures, its spelling kept.
fn went_wrong(reason: impl std::fmt::Display) -> ParseError {
    ParseError::new(
        code::OBJECT_NOT_FOUND,
        format!("LDAP: Somthing went wrong ({reason})"),
    )
}

/// The configuration Parse's adapter requires, checked when oxbase starts.
pub(crate) fn check_config(config: &ProviderConfig) -> Result<(), String> {
    let url = config.url.as_deref().unwrap_or_default();
    if !url.starts_with("ldap://") && !url.starts_with("ldaps://") {
        return Err("url must be an ldap:// or ldaps:// URL".into());
    }
    if config.suffix.is_none() {
        return Err("suffix is required".into());
    }
    if config.tls_ca_file.is_some() {
        tls_config(config)?;
    }
    Ok(())
}

/// The TLS settings of `ldaps://` with `tls_ca_file` (only those CAs),
/// made once when the providers are: `None` leaves the system's roots.
pub(crate) type TlsSettings = Result<Option<Arc<rustls::ClientConfig>>, String>;

pub(crate) fn tls_config(config: &ProviderConfig) -> TlsSettings {
    let Some(path) = &config.tls_ca_file else {
        return Ok(None);
    };
    let unreadable = |err: &dyn std::fmt::Display| format!("tls_ca_file {}: {err}", path.display());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|err| unreadable(&err))? {
        let cert = cert.map_err(|err| unreadable(&err))?;
        roots.add(cert).map_err(|err| unreadable(&err))?;
    }
    if roots.is_empty() {
        return Err(unreadable(&"no certificate in the file"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| unreadable(&err))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(Arc::new(tls)))
}

/// RFC 4514 escaping of a DN attribute value, as Parse's `escapeDN`.
pub(crate) fn escape_dn(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=' | '+' | '<' | '>' | '#' | ';' | '"') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    // Parse's two replacements, applied one after the other.
    if let Some(rest) = escaped.strip_prefix(' ') {
        escaped = format!("\\ {rest}");
    }
    if let Some(rest) = escaped.strip_suffix(' ') {
        escaped = format!("{rest}\\ ");
    }
    escaped
}

/// RFC 4515 escaping of a filter value, as Parse's `escapeFilter`.
pub(crate) fn escape_filter(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' | '*' | '(' | ')' | '\0' => escaped.push_str(&format!("\\{:02x}", c as u32)),
            _ => escaped.push(c),
        }
    }
    escaped
}

/// `{{id}}` in any case replaced everywhere, as Parse's `/{{id}}/gi`.
fn fill_filter(filter: &str, id: &str) -> String {
    let lower = filter.to_ascii_lowercase();
    let mut out = String::with_capacity(filter.len());
    let mut rest = 0;
    while let Some(at) = lower[rest..].find("{{id}}") {
        out.push_str(&filter[rest..rest + at]);
        out.push_str(&escape_filter(id));
        rest += at + "{{id}}".len();
    }
    out.push_str(&filter[rest..]);
    out
}

/// Parse's `validateAuthData`: binds as the user, then checks the group.
/// The password is taken out of `data` so that it is not stored.
pub(crate) async fn validate(
    config: &ProviderConfig,
    tls: &TlsSettings,
    data: &mut Map<String, Value>,
) -> ParseResult<()> {
    let password = data.remove("password");
    let (Some(url), Some(suffix)) = (config.url.as_deref(), config.suffix.as_deref()) else {
        return Err(ParseError::new(
            code::INTERNAL_SERVER_ERROR,
            "LDAP auth configuration missing",
        ));
    };
    let Some(Value::String(id)) = data.get("id") else {
        return Err(wrong_credentials());
    };
    // An empty password would be an unauthenticated bind (RFC 4513 5.1.2),
    // which many servers accept for any DN.
    let password = match password {
        Some(Value::String(password)) if !password.is_empty() => password,
        _ => return Err(wrong_credentials()),
    };
    let escaped = escape_dn(id);
    let user_dn = match &config.dn {
        Some(dn) => dn.replacen("{{id}}", &escaped, 1),
        None => format!("uid={escaped},{suffix}"),
    };
    let mut settings = LdapConnSettings::new().set_conn_timeout(TIMEOUT);
    match tls {
        Ok(Some(tls)) => settings = settings.set_config(Arc::clone(tls)),
        Ok(None) => {}
        Err(err) => return Err(went_wrong(err)),
    }
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, url)
        .await
        .map_err(|err| went_wrong(reason(&err)))?;
    tokio::spawn(async move {
        if let Err(err) = conn.drive().await {
            tracing::debug!(%err, "the LDAP connection ended");
        }
    });
    let bound = ldap
        .with_timeout(TIMEOUT)
        .simple_bind(&user_dn, &password)
        .await
        .and_then(ldap3::LdapResult::success);
    if let Err(err) = bound {
        let _ = ldap.unbind().await;
        return Err(match &err {
            LdapError::LdapResult { result } if result.rc == INVALID_CREDENTIALS => {
                wrong_credentials()
            }
            _ => went_wrong(reason(&err)),
        });
    }
    let checked = match (&config.group_cn, &config.group_filter) {
        (Some(group_cn), Some(group_filter)) => {
            let filter = fill_filter(group_filter, id);
            let found = ldap
                .with_timeout(TIMEOUT)
                .search(suffix, Scope::Subtree, &filter, vec!["cn"])
                .await
                .and_then(ldap3::SearchResult::success)
                .map_err(|err| {
                    tracing::warn!(%err, "the LDAP group search failed");
                    group_search_failed()
                });
            found.and_then(|(entries, _)| {
                let member = entries
                    .into_iter()
                    .map(SearchEntry::construct)
                    .any(|entry| {
                        entry.attrs.iter().any(|(name, values)| {
                            name.eq_ignore_ascii_case("cn") && values.contains(group_cn)
                        })
                    });
                if member {
                    Ok(())
                } else {
                    Err(ParseError::new(
                        code::INTERNAL_SERVER_ERROR,
                        "LDAP: User not in group",
                    ))
                }
            })
        }
        _ => Ok(()),
    };
    let _ = ldap.unbind().await;
    checked
}

/// What Parse's message says went wrong: the result code, or the
/// connection error's name as Node gives it.
fn reason(err: &LdapError) -> String {
    match err {
        LdapError::LdapResult { result } => result.rc.to_string(),
        LdapError::Io { source } => match source.kind() {
            std::io::ErrorKind::ConnectionRefused => "ECONNREFUSED".into(),
            std::io::ErrorKind::ConnectionReset => "ECONNRESET".into(),
            std::io::ErrorKind::TimedOut => "ETIMEDOUT".into(),
            kind => format!("{kind:?}"),
        },
        LdapError::Timeout { .. } => "ETIMEDOUT".into(),
        other => {
            tracing::warn!(err = %other, "LDAP sign-in failed");
            "LDAP".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_as_parse_escapes_them() {
        assert_eq!(escape_dn("a,b=c+d"), "a\\,b\\=c\\+d");
        assert_eq!(escape_dn(" x "), "\\ x\\ ");
        assert_eq!(escape_dn("\\#"), "\\\\\\#");
        assert_eq!(escape_filter("a*(b)\\"), "a\\2a\\28b\\29\\5c");
        assert_eq!(
            fill_filter("(&(memberUid={{id}})(x={{ID}}))", "a*"),
            "(&(memberUid=a\\2a)(x=a\\2a))"
        );
    }

    #[test]
    fn only_plain_ldap_urls_with_a_suffix_are_taken() {
        let config = |url: &str, suffix: Option<&str>| ProviderConfig {
            url: Some(url.into()),
            suffix: suffix.map(str::to_owned),
            ..ProviderConfig::default()
        };
        assert!(check_config(&config("ldap://localhost:389", Some("dc=x"))).is_ok());
        assert!(check_config(&config("ldaps://localhost", Some("dc=x"))).is_ok());
        assert!(check_config(&config("http://localhost", Some("dc=x"))).is_err());
        assert!(check_config(&config("ldap://localhost", None)).is_err());
        let missing_ca = ProviderConfig {
            tls_ca_file: Some("/nonexistent/ca.pem".into()),
            ..config("ldaps://localhost", Some("dc=x"))
        };
        assert!(check_config(&missing_ca).is_err());
    }
}
