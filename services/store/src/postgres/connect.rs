//! How the store reaches PostgreSQL: the database URI's parameters, both
//! libpq's and Parse Server's own, TLS over rustls, and the per-statement
//! time limit.
//!
//! TLS follows libpq's `sslmode` (`disable`, `allow`, `prefer`, `require`,
//! `verify-ca`, `verify-full`) with `sslrootcert`, `sslcert` and `sslkey`,
//! and Parse Server's `ssl=true`, `ca`, `cert`, `key` and
//! `rejectUnauthorized`, with these choices:
//!
//! - A URI that asks for no TLS connects without it, as Parse Server does
//!   with the same URI (libpq would `prefer`). One that names a TLS file
//!   (`sslrootcert`, `sslcert`, `sslkey`) but no `sslmode` gets libpq's
//!   default, `prefer`.
//! - Parse Server's `ssl=true` (or any of its TLS parameters without
//!   `sslmode`) is `verify-full`, as node-postgres does under Parse Server:
//!   against `ca` when given, else the Mozilla roots Node also bundles.
//!   `rejectUnauthorized=false` turns the check off (`require`).
//! - `prefer` and `require` check no certificate, unless a CA is given:
//!   then they check the chain, as libpq's do with a root certificate
//!   (`verify-ca`). `allow` is `prefer`: tokio-postgres cannot try without
//!   TLS first.
//! - `verify-ca` and `verify-full` without `sslrootcert` check against the
//!   Mozilla roots (libpq would look for `~/.postgresql/root.crt`);
//!   `sslrootcert=system` asks for them explicitly and implies
//!   `verify-full`, as in libpq.
//! - What cannot be honoured is refused, never dropped: a contradiction
//!   (`sslmode=disable` with `ssl=true`), an encrypted key (`sslpassword`,
//!   `passphrase`), a PKCS#12 bundle (`pfx`), revocation lists (`sslcrl`).
//!
//! Other parameters tokio-postgres does not know are dropped, as before
//! (Parse Server's `binary`, `idleTimeoutMillis`, ...); `poolSize` and `max`
//! size the pool.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{StoreError, StoreResult};

/// What a pool (or the schema listener) connects with.
#[derive(Clone)]
pub(super) struct Target {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
    /// The pool size Parse Server's `poolSize` or `max` asks for.
    pub pool_size: Option<usize>,
}

/// URI parameters tokio-postgres understands and is handed as they are.
const LIBPQ_PARAMS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "sslnegotiation",
    "connect_timeout",
    "keepalives",
    "keepalives_idle",
    "target_session_attrs",
    "channel_binding",
];

/// TLS parameters that ask for what this client cannot do.
const UNSUPPORTED_TLS_PARAMS: &[(&str, &str)] = &[
    ("sslpassword", "decrypt the key first"),
    ("passphrase", "decrypt the key first"),
    ("pfx", "give the certificate and key as PEM (cert, key)"),
    ("sslcrl", "certificate revocation lists are not checked"),
    ("sslcrldir", "certificate revocation lists are not checked"),
];

/// The TLS parameters of a URI, as written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct TlsParams {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    sslcert: Option<String>,
    sslkey: Option<String>,
    /// Parse Server's `ssl=true`.
    ssl: bool,
    /// Parse Server's `ca`, `cert` and `key`.
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    /// Parse Server's `rejectUnauthorized`.
    reject_unauthorized: Option<bool>,
}

/// Which certificates the server's certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Roots {
    /// The Mozilla roots (`webpki-roots`).
    Mozilla,
    /// The certificates in a PEM file.
    File(PathBuf),
}

/// How the server's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Check {
    /// Not at all (libpq's `prefer` and `require`).
    Nothing,
    /// It chains to the roots (libpq's `verify-ca`).
    Chain(Roots),
    /// It chains to the roots and names the host (libpq's `verify-full`).
    ChainAndName(Roots),
}

/// What the URI asks of TLS, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TlsPolicy {
    mode: SslMode,
    check: Check,
    /// A client certificate and its key (PEM files).
    identity: Option<(PathBuf, PathBuf)>,
}

/// Parses a `postgres://` URI into what the pools connect with; with a
/// `query_timeout`, every connection has it as its `statement_timeout`.
pub(super) fn target(uri: &str, query_timeout: Option<Duration>) -> StoreResult<Target> {
    let (base, query) = uri.split_once('?').unwrap_or((uri, ""));
    let mut kept = Vec::new();
    let mut tls = TlsParams::default();
    let mut pool_size = None;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(raw);
        if let Some((_, hint)) = UNSUPPORTED_TLS_PARAMS.iter().find(|(name, _)| *name == key) {
            return Err(config_error(format!(
                "the PostgreSQL URI parameter {key} is not supported: {hint}"
            )));
        }
        match key {
            "poolSize" | "max" => pool_size = value.parse().ok(),
            "sslmode" => tls.sslmode = Some(value),
            "sslrootcert" => tls.sslrootcert = Some(value),
            "sslcert" => tls.sslcert = Some(value),
            "sslkey" => tls.sslkey = Some(value),
            "ssl" => tls.ssl = value.eq_ignore_ascii_case("true"),
            "ca" => tls.ca = Some(value),
            "cert" => tls.cert = Some(value),
            "key" => tls.key = Some(value),
            "rejectUnauthorized" => {
                tls.reject_unauthorized = Some(value.eq_ignore_ascii_case("true"))
            }
            _ if LIBPQ_PARAMS.contains(&key) => kept.push(pair),
            _ => {}
        }
    }
    let uri = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config = tokio_postgres::Config::from_str(&uri)
        .map_err(|e| StoreError::backend_context("bad PostgreSQL URI", e))?;
    let policy = resolve(tls)?;
    config.ssl_mode(policy.mode);
    if let Some(timeout) = query_timeout {
        set_statement_timeout(&mut config, timeout);
    }
    Ok(Target {
        config,
        tls: MakeRustlsConnect::new(client_config(&policy)?),
        pool_size,
    })
}

/// Puts the limit in the startup packet, so it holds from the first
/// statement and survives `RESET ALL`. The URI's own `options` come after
/// it, so a `-c statement_timeout=...` there still wins.
fn set_statement_timeout(config: &mut tokio_postgres::Config, timeout: Duration) {
    let ours = format!("-c statement_timeout={}", timeout.as_millis());
    let options = match config.get_options() {
        Some(theirs) => format!("{ours} {theirs}"),
        None => ours,
    };
    config.options(options);
}

fn resolve(params: TlsParams) -> StoreResult<TlsPolicy> {
    let parse_asked = params.ssl
        || params.ca.is_some()
        || params.cert.is_some()
        || params.key.is_some()
        || params.reject_unauthorized.is_some();
    let libpq_asked =
        params.sslrootcert.is_some() || params.sslcert.is_some() || params.sslkey.is_some();
    let ca = params.sslrootcert.or(params.ca);
    let system_roots = ca.as_deref() == Some("system");
    let unchecked = params.reject_unauthorized == Some(false);
    let mode = match params.sslmode.as_deref() {
        Some(mode) => mode,
        None if system_roots => "verify-full",
        None if parse_asked && unchecked => "require",
        None if parse_asked => "verify-full",
        None if libpq_asked => "prefer",
        None => "disable",
    };
    let roots = match ca {
        Some(ref path) if !system_roots => Roots::File(PathBuf::from(path)),
        _ => Roots::Mozilla,
    };
    let (mode, check) = match mode {
        "disable" if params.ssl => {
            return Err(config_error(
                "the PostgreSQL URI has both sslmode=disable and ssl=true",
            ));
        }
        "disable" => (SslMode::Disable, Check::Nothing),
        "allow" | "prefer" | "require" => {
            if system_roots {
                return Err(config_error(format!(
                    "weak sslmode {mode:?} may not be used with sslrootcert=system (use verify-full)"
                )));
            }
            let check = match roots {
                Roots::File(_) if !unchecked => Check::Chain(roots),
                _ => Check::Nothing,
            };
            let mode = if mode == "require" {
                SslMode::Require
            } else {
                SslMode::Prefer
            };
            (mode, check)
        }
        "verify-ca" | "verify-full" if unchecked => {
            return Err(config_error(format!(
                "the PostgreSQL URI has both sslmode={mode} and rejectUnauthorized=false"
            )));
        }
        "verify-ca" => (SslMode::Require, Check::Chain(roots)),
        "verify-full" => (SslMode::Require, Check::ChainAndName(roots)),
        other => {
            return Err(config_error(format!(
                "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
            )));
        }
    };
    let identity = match (params.sslcert.or(params.cert), params.sslkey.or(params.key)) {
        (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
        (None, None) => None,
        _ => {
            return Err(config_error(
                "a PostgreSQL client certificate needs both sslcert and sslkey (cert and key)",
            ));
        }
    };
    Ok(TlsPolicy {
        mode,
        check,
        identity,
    })
}

/// The rustls client for `policy`, on ring as the rest of the tree. It is
/// built even without TLS (tokio-postgres then never uses it), so that
/// every connection has one type.
fn client_config(policy: &TlsPolicy) -> StoreResult<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match &policy.check {
        Check::Nothing => Arc::new(AnyCertificate(Arc::clone(&provider))),
        Check::Chain(roots) => Arc::new(ChainOnly {
            roots: load_roots(roots)?,
            provider: Arc::clone(&provider),
        }),
        Check::ChainAndName(roots) => WebPkiServerVerifier::builder_with_provider(
            Arc::new(load_roots(roots)?),
            Arc::clone(&provider),
        )
        .build()
        .map_err(|e| StoreError::backend_context("PostgreSQL TLS", e))?,
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::backend_context("PostgreSQL TLS", e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &policy.identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certificates(cert)?, load_key(key)?)
            .map_err(|e| StoreError::backend_context("PostgreSQL client certificate", e))?,
        None => builder.with_no_client_auth(),
    };
    // PostgreSQL 17's direct TLS (`sslnegotiation=direct`) needs it; older
    // servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(config)
}

fn load_roots(roots: &Roots) -> StoreResult<RootCertStore> {
    match roots {
        Roots::Mozilla => Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }),
        Roots::File(path) => {
            let mut store = RootCertStore::empty();
            for certificate in load_certificates(path)? {
                store.add(certificate).map_err(|e| {
                    StoreError::backend_context(format!("CA certificate {}", path.display()), e)
                })?;
            }
            Ok(store)
        }
    }
}

fn load_certificates(path: &Path) -> StoreResult<Vec<CertificateDer<'static>>> {
    let context = || format!("cannot read the certificates in {}", path.display());
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|e| StoreError::backend_context(context(), e))?;
    if certificates.is_empty() {
        return Err(config_error(format!("{}: no certificate in it", context())));
    }
    Ok(certificates)
}

fn load_key(path: &Path) -> StoreResult<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        StoreError::backend_context(
            format!(
                "cannot read the private key in {} (PEM, unencrypted)",
                path.display()
            ),
            e,
        )
    })
}

fn config_error(message: impl Into<String>) -> StoreError {
    StoreError::backend_message(message)
}

/// `%XX` escapes decoded, as tokio-postgres decodes the parameters it
/// reads; a malformed escape stays as written.
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| raw.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Accepts any certificate (libpq's `require` without a CA): the link is
/// encrypted against eavesdroppers, not authenticated. The handshake's
/// signatures are still checked, so the key the server proves it holds
/// is the certificate's, and SCRAM's channel binding (`-PLUS`) can tie
/// the password exchange to it.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Checks that the certificate chains to `roots`, whatever host it names
/// (libpq's `verify-ca`).
#[derive(Debug)]
struct ChainOnly {
    roots: RootCertStore,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let certificate = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &certificate,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str) -> TlsParams {
        let mut params = TlsParams::default();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap();
            let value = value.to_owned();
            match key {
                "sslmode" => params.sslmode = Some(value),
                "sslrootcert" => params.sslrootcert = Some(value),
                "sslcert" => params.sslcert = Some(value),
                "sslkey" => params.sslkey = Some(value),
                "ssl" => params.ssl = value == "true",
                "ca" => params.ca = Some(value),
                "cert" => params.cert = Some(value),
                "key" => params.key = Some(value),
                "rejectUnauthorized" => params.reject_unauthorized = Some(value == "true"),
                _ => panic!("{key}"),
            }
        }
        params
    }

    fn policy(query: &str) -> (SslMode, Check) {
        let policy = resolve(params(query)).unwrap_or_else(|e| panic!("{query}: {e}"));
        (policy.mode, policy.check)
    }

    fn refused(query: &str) -> String {
        match resolve(params(query)) {
            Ok(policy) => panic!("{query} resolved to {policy:?}"),
            Err(err) => err.to_string(),
        }
    }

    fn file(path: &str) -> Roots {
        Roots::File(PathBuf::from(path))
    }

    #[test]
    fn no_tls_unless_asked() {
        assert_eq!(policy(""), (SslMode::Disable, Check::Nothing));
        assert_eq!(policy("ssl=false"), (SslMode::Disable, Check::Nothing));
        assert_eq!(
            policy("sslmode=disable&sslrootcert=/ca.pem"),
            (SslMode::Disable, Check::Nothing)
        );
    }

    #[test]
    fn libpq_modes() {
        assert_eq!(policy("sslmode=allow"), (SslMode::Prefer, Check::Nothing));
        assert_eq!(policy("sslmode=prefer"), (SslMode::Prefer, Check::Nothing));
        assert_eq!(
            policy("sslmode=require"),
            (SslMode::Require, Check::Nothing)
        );
        assert_eq!(
            policy("sslmode=verify-ca"),
            (SslMode::Require, Check::Chain(Roots::Mozilla))
        );
        assert_eq!(
            policy("sslmode=verify-full&sslrootcert=/ca.pem"),
            (SslMode::Require, Check::ChainAndName(file("/ca.pem")))
        );
        // libpq: a root certificate makes `require` check the chain.
        assert_eq!(
            policy("sslmode=require&sslrootcert=/ca.pem"),
            (SslMode::Require, Check::Chain(file("/ca.pem")))
        );
        // A TLS file without a mode: libpq's default mode, `prefer`.
        assert_eq!(
            policy("sslrootcert=/ca.pem"),
            (SslMode::Prefer, Check::Chain(file("/ca.pem")))
        );
        assert_eq!(
            policy("sslrootcert=system"),
            (SslMode::Require, Check::ChainAndName(Roots::Mozilla))
        );
    }

    #[test]
    fn parse_server_parameters() {
        assert_eq!(
            policy("ssl=true"),
            (SslMode::Require, Check::ChainAndName(Roots::Mozilla))
        );
        assert_eq!(
            policy("ssl=true&ca=/ca.pem"),
            (SslMode::Require, Check::ChainAndName(file("/ca.pem")))
        );
        // Parse Server turns TLS on for any of its TLS options.
        assert_eq!(
            policy("ca=/ca.pem"),
            (SslMode::Require, Check::ChainAndName(file("/ca.pem")))
        );
        assert_eq!(
            policy("ssl=true&rejectUnauthorized=false"),
            (SslMode::Require, Check::Nothing)
        );
        assert_eq!(
            policy("sslmode=require&ca=/ca.pem&rejectUnauthorized=false"),
            (SslMode::Require, Check::Nothing)
        );
        let identity = resolve(params("ssl=true&cert=/c.pem&key=/k.pem"))
            .unwrap()
            .identity;
        assert_eq!(
            identity,
            Some((PathBuf::from("/c.pem"), PathBuf::from("/k.pem")))
        );
    }

    #[test]
    fn contradictions_are_refused() {
        assert!(refused("sslmode=disable&ssl=true").contains("sslmode=disable"));
        assert!(
            refused("sslmode=verify-full&rejectUnauthorized=false").contains("rejectUnauthorized")
        );
        assert!(refused("sslmode=require&sslrootcert=system").contains("weak sslmode"));
        assert!(refused("sslmode=verify").contains("not one of"));
        assert!(refused("sslmode=require&sslcert=/c.pem").contains("sslkey"));
    }

    #[test]
    fn the_uri_keeps_what_tokio_postgres_reads() {
        let target = target(
            "postgres://u:p@db.example:6543/app?ssl=true&poolSize=7&binary=true&application_name=oxbase&options=-c%20search_path%3Dapp",
            Some(Duration::from_millis(2500)),
        )
        .unwrap();
        assert_eq!(target.pool_size, Some(7));
        assert_eq!(target.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(target.config.get_application_name(), Some("oxbase"));
        assert_eq!(
            target.config.get_options(),
            Some("-c statement_timeout=2500 -c search_path=app")
        );
        assert_eq!(target.config.get_dbname(), Some("app"));
        let plain = super::target("postgres://u@localhost/app", None).unwrap();
        assert_eq!(plain.config.get_ssl_mode(), SslMode::Disable);
        assert_eq!(plain.config.get_options(), None);
    }

    #[test]
    fn unsupported_tls_parameters_are_refused() {
        for query in ["pfx=/b.p12", "sslpassword=x", "sslcrl=/crl.pem"] {
            let err = target(&format!("postgres://u@localhost/app?{query}"), None)
                .err()
                .unwrap_or_else(|| panic!("{query} was accepted"));
            assert!(err.to_string().contains("not supported"), "{err}");
        }
    }

    #[test]
    fn a_missing_ca_file_is_refused() {
        let err = target(
            "postgres://u@localhost/app?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
            None,
        )
        .err()
        .expect("accepted");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn percent_escapes_are_decoded() {
        assert_eq!(percent_decode("%2Fetc%2Fca.pem"), "/etc/ca.pem");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
