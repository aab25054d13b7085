//! How the PostgreSQL store connects: TLS as libpq's `sslmode` and Parse
//! Server's `ssl=true` ask for it, against servers this suite starts on
//! its own (with `initdb` and `pg_ctl` from the PostgreSQL install that
//! `ops/postgres.sh` makes) with certificates it makes; and the query time
//! limit, on the server `OXBASE_TEST_POSTGRES_URI` names.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use oxbase_store::postgres::PostgresStore;
use oxbase_store::query::RegexSpec;
use oxbase_store::{
    Condition, FieldType, Filter, Query, SchemaView, Store, StoreError, StoreOptions, WriteBatch,
    WriteOp,
};
use oxbase_test_support::PostgresDatabase;
use serde_json::json;

const PASSWORD: &str = "secret";

/// The PEM files a server and its clients use: the server's certificate
/// (for `localhost` only) and a client's (for the role `certuser`), both
/// signed by `ca`, and an unrelated CA.
struct Certificates {
    ca: String,
    other_ca: String,
    server: (String, String),
    client: (String, String),
}

fn certificates() -> Certificates {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "oxbase test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, common_name: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let certificate = params.signed_by(&key, &issuer).unwrap();
        (certificate.pem(), key.serialize_pem())
    };
    let other_key = rcgen::KeyPair::generate().unwrap();
    let mut other_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    other_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    Certificates {
        ca,
        other_ca: other_params.self_signed(&other_key).unwrap().pem(),
        server: leaf(vec!["localhost".into()], "localhost"),
        client: leaf(Vec::new(), "certuser"),
    }
}

/// Where PostgreSQL's server programs are: `OXBASE_TEST_POSTGRES_BIN`, or
/// Debian's `/usr/lib/postgresql/<newest>/bin`, or `initdb`'s directory on
/// the `PATH`.
fn postgres_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("OXBASE_TEST_POSTGRES_BIN") {
        return PathBuf::from(dir);
    }
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max();
    if let Some((_, bin)) = debian {
        return bin;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| dir.join("initdb").exists())
        .expect(
            "no PostgreSQL server programs (initdb, pg_ctl): run `source ops/postgres.sh`, \
             which installs them, or set OXBASE_TEST_POSTGRES_BIN",
        )
}

/// PostgreSQL refuses to run as root; there it runs as `postgres`, the
/// user Debian's package makes.
fn as_root() -> bool {
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

/// A PostgreSQL server of its own, on a free port of 127.0.0.1, in a
/// temporary directory; stopped when dropped. Its role `oxbase` logs in
/// with a password, `certuser` (with TLS) with a client certificate.
struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl Cluster {
    fn start(certificates: Option<&Certificates>) -> Self {
        // Under root the server runs as `postgres`, which must reach the
        // directory: /tmp, whatever TMPDIR says.
        let dir = if as_root() {
            tempfile::tempdir_in("/tmp")
        } else {
            tempfile::tempdir()
        }
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Self {
            dir,
            bin: postgres_bin(),
            port,
        };
        cluster.write("password", PASSWORD);
        let mut conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             fsync = off\nmax_connections = 40\nshared_buffers = 16MB\n",
            cluster.path(""),
        );
        if let Some(certificates) = certificates {
            cluster.write("server.crt", &certificates.server.0);
            cluster.write("server.key", &certificates.server.1);
            cluster.write("ca.crt", &certificates.ca);
            cluster.write("other-ca.crt", &certificates.other_ca);
            cluster.write("client.crt", &certificates.client.0);
            cluster.write("client.key", &certificates.client.1);
            // The server refuses a key others may read.
            std::fs::set_permissions(
                cluster.path("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
            conf += &format!(
                "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nssl_ca_file = '{}'\n",
                cluster.path("server.crt"),
                cluster.path("server.key"),
                cluster.path("ca.crt"),
            );
        } else {
            conf += "ssl = off\n";
        }
        if as_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(cluster.dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown failed");
        }
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.path("data"),
                "-U",
                "oxbase",
                "--pwfile",
                &cluster.path("password"),
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
            ],
        );
        let data = cluster.dir.path().join("data");
        let mut existing = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        existing += &conf;
        std::fs::write(data.join("postgresql.conf"), existing).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all certuser 127.0.0.1/32 cert\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        cluster.run(
            "pg_ctl",
            &[
                "-D",
                &cluster.path("data"),
                "-l",
                &cluster.path("log"),
                "-w",
                "-t",
                "60",
                "-s",
                "start",
            ],
        );
        cluster
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    /// Writes a file the server (running as another user) can read.
    fn write(&self, name: &str, contents: &str) {
        std::fs::write(self.dir.path().join(name), contents).unwrap();
    }

    /// One of PostgreSQL's programs, to run as the user the server runs as.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = self.command(program).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default(),
        );
    }

    /// A URI for `user` at `host` (which must reach 127.0.0.1), with the
    /// query parameters `params`.
    fn uri(&self, user: &str, host: &str, params: &str) -> String {
        format!(
            "postgres://{user}:{PASSWORD}@{host}:{}/postgres?{params}",
            self.port
        )
    }

    /// A connection of the test's own, without TLS.
    async fn admin(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=oxbase password={PASSWORD} dbname=postgres sslmode=disable",
                self.port
            ),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        client
    }
}

impl Drop for Cluster {
    /// Stops the server, if it started; a test failing already must not
    /// panic again here.
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args([
                "-D",
                &self.path("data"),
                "-m",
                "immediate",
                "-w",
                "-s",
                "stop",
            ])
            .output();
    }
}

/// What connecting with one URI must give.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The store's connections use TLS.
    Tls,
    /// They do not.
    Plain,
    /// The store refuses to open, with an error containing this text.
    Refused(&'static str),
}

/// One URI to open the store with. `name` is also the connections'
/// `application_name`, by which the server's view of them is found.
struct Case {
    name: &'static str,
    user: &'static str,
    host: &'static str,
    params: String,
    expect: Expect,
}

fn case(name: &'static str, host: &'static str, params: &str, expect: Expect) -> Case {
    Case {
        name,
        user: "oxbase",
        host,
        params: params.to_owned(),
        expect,
    }
}

/// Opens the store with each case's URI and checks the outcome; returns
/// the cases that did not go as expected.
async fn run_cases(cluster: &Cluster, cases: Vec<Case>) -> Vec<String> {
    let admin = cluster.admin().await;
    let mut failures = Vec::new();
    for case in cases {
        let uri = cluster.uri(
            case.user,
            case.host,
            &format!("application_name={}&{}", case.name, case.params),
        );
        let opened = tokio::time::timeout(
            Duration::from_secs(30),
            PostgresStore::connect(&uri, &StoreOptions::default()),
        )
        .await
        .unwrap_or_else(|_| panic!("{}: connecting hung", case.name));
        let outcome = match opened {
            Ok(store) => {
                store.ping().await.unwrap();
                let rows = admin
                    .query(
                        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                         WHERE a.application_name = $1",
                        &[&case.name],
                    )
                    .await
                    .unwrap();
                let tls: Vec<bool> = rows.iter().map(|row| row.get(0)).collect();
                drop(store);
                match tls.as_slice() {
                    [] => "no connection".to_owned(),
                    _ if tls.iter().all(|tls| *tls) => "TLS".to_owned(),
                    _ if tls.iter().all(|tls| !*tls) => "plain".to_owned(),
                    _ => format!("mixed {tls:?}"),
                }
            }
            Err(err) => format!("refused: {err}"),
        };
        let ok = match case.expect {
            Expect::Tls => outcome == "TLS",
            Expect::Plain => outcome == "plain",
            Expect::Refused(text) => outcome.starts_with("refused") && outcome.contains(text),
        };
        if !ok {
            failures.push(format!(
                "{} ({}): expected {:?}, got {outcome}",
                case.name, case.params, case.expect
            ));
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_against_a_server_with_a_certificate_of_its_own() {
    let certificates = certificates();
    let cluster = tokio::task::spawn_blocking(move || Cluster::start(Some(&certificates)))
        .await
        .unwrap();
    cluster
        .admin()
        .await
        .batch_execute("CREATE ROLE certuser LOGIN SUPERUSER")
        .await
        .unwrap();
    let ca = cluster.path("ca.crt");
    let other_ca = cluster.path("other-ca.crt");
    let client = format!(
        "sslcert={}&sslkey={}",
        cluster.path("client.crt"),
        cluster.path("client.key")
    );
    let mut cases = vec![
        // As before, and as Parse Server: no TLS unless the URI asks.
        case("default", "127.0.0.1", "", Expect::Plain),
        case("disable", "127.0.0.1", "sslmode=disable", Expect::Plain),
        case("prefer", "127.0.0.1", "sslmode=prefer", Expect::Tls),
        case("require", "127.0.0.1", "sslmode=require", Expect::Tls),
        case(
            "verify_full",
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
            Expect::Tls,
        ),
        case(
            "verify_full_wrong_ca",
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={other_ca}"),
            Expect::Refused("UnknownIssuer"),
        ),
        // The certificate names localhost, not 127.0.0.1.
        case(
            "verify_full_wrong_name",
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
            Expect::Refused("not valid for name"),
        ),
        case(
            "verify_ca",
            "127.0.0.1",
            &format!("sslmode=verify-ca&sslrootcert={ca}"),
            Expect::Tls,
        ),
        // libpq: with a root certificate, require checks the chain.
        case(
            "require_wrong_ca",
            "127.0.0.1",
            &format!("sslmode=require&sslrootcert={other_ca}"),
            Expect::Refused("UnknownIssuer"),
        ),
        // Not in the Mozilla roots.
        case(
            "verify_full_system",
            "localhost",
            "sslmode=verify-full",
            Expect::Refused("UnknownIssuer"),
        ),
        // Parse Server's parameters, as node-postgres reads them.
        case(
            "parse_ssl_ca",
            "localhost",
            &format!("ssl=true&ca={ca}"),
            Expect::Tls,
        ),
        case(
            "parse_ssl",
            "localhost",
            "ssl=true",
            Expect::Refused("UnknownIssuer"),
        ),
        case(
            "parse_unchecked",
            "127.0.0.1",
            "ssl=true&rejectUnauthorized=false",
            Expect::Tls,
        ),
        case(
            "parse_wrong_ca",
            "localhost",
            &format!("ssl=true&ca={other_ca}"),
            Expect::Refused("UnknownIssuer"),
        ),
    ];
    cases.push(Case {
        user: "certuser",
        ..case(
            "client_certificate",
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={ca}&{client}"),
            Expect::Tls,
        )
    });
    cases.push(Case {
        user: "certuser",
        ..case(
            "no_client_certificate",
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
            Expect::Refused("requires a valid client certificate"),
        )
    });
    let failures = run_cases(&cluster, cases).await;
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refused_by_a_server_without_it() {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(None))
        .await
        .unwrap();
    let cases = vec![
        case(
            "require",
            "127.0.0.1",
            "sslmode=require",
            Expect::Refused("server does not support TLS"),
        ),
        case(
            "parse_ssl",
            "127.0.0.1",
            "ssl=true&rejectUnauthorized=false",
            Expect::Refused("server does not support TLS"),
        ),
        case("prefer", "127.0.0.1", "sslmode=prefer", Expect::Plain),
        case("default", "127.0.0.1", "", Expect::Plain),
    ];
    let failures = run_cases(&cluster, cases).await;
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// A `$regex` with back-references, which PostgreSQL's engine backtracks
/// through for a long time (about a minute here, on this text), is
/// cancelled at the limit; the store stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_past_the_time_limit_is_cancelled() {
    let db = PostgresDatabase::create(
        "oxbase_timeout",
        "OXBASE_TEST_POSTGRES_URI is not set: run `bash ops/test.sh`, which installs and starts \
         PostgreSQL, or point it at a server whose user may create databases",
    )
    .await;
    let options = StoreOptions {
        query_timeout: Some(Duration::from_millis(300)),
        ..StoreOptions::default()
    };
    let store = PostgresStore::connect(db.uri(), &options).await.unwrap();
    let fields = BTreeMap::from([("text".to_owned(), FieldType::String)]);
    store.ensure_fields("Slow", &fields).await.unwrap();
    let view = SchemaView::new(store.load_schemas().await.unwrap());
    let object = json!({
        "objectId": "slow1",
        "createdAt": "2024-01-01T00:00:00.000Z",
        "updatedAt": "2024-01-01T00:00:00.000Z",
        "text": format!("{}c", "ab".repeat(300)),
    });
    let create = WriteOp::Create {
        class_name: "Slow".into(),
        object: object.as_object().unwrap().clone(),
        relations: Vec::new(),
    };
    let batch = WriteBatch {
        ops: vec![create],
        atomic: true,
        events: None,
    };
    store.write(&view, batch).await.unwrap().remove(0).unwrap();

    let slow = Query::new("Slow").filter(Filter::field(
        "text",
        Condition::Regex(RegexSpec {
            pattern: r"^(.*)(.*)(.*)\3\2\1$".into(),
            options: String::new(),
        }),
    ));
    let result = tokio::time::timeout(Duration::from_secs(20), store.find(&view, &slow))
        .await
        .expect("the query ran on past the time limit");
    assert!(
        matches!(result, Err(StoreError::QueryTimeout)),
        "{:?}",
        result.map(|found| found.len())
    );
    let all = store.find(&view, &Query::new("Slow")).await.unwrap();
    assert_eq!(all.len(), 1);
}
