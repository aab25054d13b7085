//! Fixtures shared by oxbase's test suites, so that each is written once:
//!
//! - [`PostgresDatabase`]: a fresh database on the server
//!   `OXBASE_TEST_POSTGRES_URI` names, dropped when the value is;
//! - [`with_database`] and [`unique_database_name`], for any backend's
//!   per-test database;
//! - [`for_each_conformance_test!`]: the list of the store conformance
//!   checks every backend's suite runs;
//! - [`NatsServer`]: a JetStream nats-server of the test's own;
//! - [`MotoServer`]: a local S3 server (moto) of the test's own.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A nats-server with JetStream on a free loopback port, from PATH (`bash
/// ops/test.sh` installs one), killed when dropped.
pub struct NatsServer {
    child: Child,
    pub url: String,
}

impl NatsServer {
    /// Starts one keeping its streams in `dir`, and waits until it listens.
    pub fn start(dir: &std::path::Path) -> Self {
        let port = free_port();
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on PATH (bash ops/test.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            url: format!("nats://127.0.0.1:{port}"),
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where `bash ops/test.sh` installs the tools the tests run:
/// `<repository>/.oxbase/tools` (Python packages, and `bin/`).
pub fn tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.oxbase/tools")
}

/// moto's S3 server (PyPI's `moto[server]`, which `bash ops/test.sh`
/// installs into [`tools_dir`]) on a free loopback port, killed when
/// dropped. It takes any credentials and keeps buckets in memory.
pub struct MotoServer {
    child: Child,
    port: u16,
    pub url: String,
}

impl MotoServer {
    /// Starts one and waits until it answers: `moto_server` from PATH or
    /// the tools' `bin/`, else `python3 -m moto.server` (a `pip install
    /// --target` into an existing directory may leave the script out).
    pub fn start() -> Self {
        let port = free_port();
        let tools = tools_dir();
        let python_path = match std::env::var_os("PYTHONPATH") {
            Some(more) => {
                let mut paths = vec![tools.clone()];
                paths.extend(std::env::split_paths(&more));
                std::env::join_paths(paths).expect("PYTHONPATH entries")
            }
            None => tools.clone().into_os_string(),
        };
        let mut command = match find_program("moto_server", &tools.join("bin")) {
            Some(script) => Command::new(script),
            None => {
                let mut python = Command::new("python3");
                python.args(["-m", "moto.server"]);
                python
            }
        };
        let mut child = command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("PYTHONPATH", python_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs moto's server");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "moto's server exited ({status}): run `bash ops/test.sh`, which installs \
                     moto[server] into .oxbase/tools"
                );
            }
            assert!(Instant::now() < deadline, "moto's server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            child,
            port,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Creates the bucket `name` (moto takes unsigned requests).
    pub fn create_bucket(&self, name: &str) {
        let reply = self.send("PUT", &format!("/{name}"));
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }

    /// The server's answer to an unsigned request without a body, whole.
    pub fn send(&self, method: &str, path: &str) -> String {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
            self.port
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        reply
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// `name` on PATH, else in `fallback`.
fn find_program(name: &str, fallback: &Path) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(std::iter::once(fallback.to_owned()))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The variable naming a PostgreSQL server whose user may create databases
/// (`bash ops/test.sh`, or `source ops/postgres.sh`, sets it).
pub const POSTGRES_URI_VARIABLE: &str = "OXBASE_TEST_POSTGRES_URI";

/// `<prefix>_<16 random hex digits>`: a database name no other test uses.
pub fn unique_database_name(prefix: &str) -> String {
    format!("{prefix}_{:016x}", rand::random::<u64>())
}

/// The same server URI (`postgres://...`, `mongodb://...`) with another
/// database: the path after the authority is replaced, options after `?`
/// are kept.
pub fn with_database(uri: &str, name: &str) -> String {
    let (base, query) = uri
        .split_once('?')
        .map(|(b, q)| (b, format!("?{q}")))
        .unwrap_or((uri, String::new()));
    let authority_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[authority_end..]
        .find('/')
        .map(|i| authority_end + i)
        .unwrap_or(base.len());
    format!("{}/{name}{query}", &base[..path_start])
}

/// A PostgreSQL database that lives as long as the value: created on the
/// server [`POSTGRES_URI_VARIABLE`] names, dropped (`WITH (FORCE)`) on drop.
#[derive(Debug)]
pub struct PostgresDatabase {
    admin_uri: String,
    name: String,
    uri: String,
}

impl PostgresDatabase {
    /// Creates the database `<prefix>_<random hex>`. Panics with `missing`
    /// when [`POSTGRES_URI_VARIABLE`] is not set, and when the server
    /// cannot be reached or refuses. Needs a Tokio runtime.
    pub async fn create(prefix: &str, missing: &str) -> Self {
        let admin_uri = std::env::var(POSTGRES_URI_VARIABLE).expect(missing);
        let name = unique_database_name(prefix);
        let (client, connection) = tokio_postgres::connect(&admin_uri, tokio_postgres::NoTls)
            .await
            .expect("cannot connect to OXBASE_TEST_POSTGRES_URI");
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let uri = with_database(&admin_uri, &name);
        Self {
            admin_uri,
            name,
            uri,
        }
    }

    /// The URI of the new database.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The new database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let (uri, name) = (self.admin_uri.clone(), self.name.clone());
        // Drop cannot await; a short-lived runtime on its own thread can.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&uri, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// Calls the macro `$callback` with the names of the store conformance
/// checks, the `pub async fn <name>(store)` of
/// `services/store/tests/conformance/mod.rs`, comma-separated. Each
/// backend's suite defines a macro that makes one test per name with its
/// own store and hands it here, so all run the same list:
///
/// ```ignore
/// macro_rules! conformance_tests {
///     ($($name:ident),* $(,)?) => { $( #[tokio::test] async fn $name() { /* ... */ } )* };
/// }
/// oxbase_test_support::for_each_conformance_test!(conformance_tests);
/// ```
///
/// A check added to the conformance module belongs in this list.
#[macro_export]
macro_rules! for_each_conformance_test {
    ($callback:ident) => {
        $callback! {
            create_read_update_delete,
            duplicate_ids_are_refused,
            preconditions_guard_updates_and_deletes,
            atomic_batches_are_all_or_nothing,
            schema_changes_merge_and_conflict,
            comparison_operators,
            arrays_and_nested_objects,
            regex_and_logic,
            subqueries,
            geo_queries,
            text_search,
            order_skip_limit_keys_count,
            hostile_input_is_inert,
            includes_resolve_pointers,
            relations_and_related_to,
            permission_filters,
            unique_fields_of_system_classes,
            auth_data_ids_are_unique_once_indexed,
            schema_operations,
            writes_leave_events_in_the_outbox,
            events_follow_the_policy,
            explain_answers_the_plan,
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_replace_the_uri_path() {
        assert_eq!(
            with_database("postgres://u:p@127.0.0.1:5432/postgres", "db"),
            "postgres://u:p@127.0.0.1:5432/db"
        );
        assert_eq!(
            with_database("postgresql://h/postgres?sslmode=disable", "db"),
            "postgresql://h/db?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "db"),
            "postgres://h:5432/db"
        );
    }

    #[test]
    fn database_names_are_unique_and_valid_identifiers() {
        let (a, b) = (
            unique_database_name("oxbase_test"),
            unique_database_name("oxbase_test"),
        );
        assert_ne!(a, b);
        assert_eq!(a.len(), "oxbase_test_".len() + 16);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
        );
    }

    macro_rules! names {
        ($($name:ident),* $(,)?) => {
            [$(stringify!($name)),*]
        };
    }

    #[test]
    fn the_conformance_list_has_each_check_once() {
        let names = for_each_conformance_test!(names);
        let mut sorted = names.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        assert_eq!(names.len(), 22);
    }
}
