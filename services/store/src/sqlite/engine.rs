//! The threads behind the SQLite backend: one writer that group-commits,
//! a pool of readers, and a checkpointer. Async callers hand them closures
//! and await the answer.
//!
//! The writer commits whatever work is queued together in one transaction,
//! each piece in its own savepoint so one failure does not undo the others,
//! and answers only after COMMIT. Readers each own a connection; WAL mode
//! lets them read while the writer writes.
//!
//! Checkpoints (copying the WAL back into the database file, with an fsync)
//! run on their own thread rather than inside whichever commit crosses
//! SQLite's auto-checkpoint threshold: the writer is the one thread every
//! write waits for, and an fsync there stalls them all. The checkpointer
//! cannot finish while the writer keeps appending, though, and only a
//! finished checkpoint lets the WAL start over; so once the WAL passes
//! `WAL_RESTART_FRAMES` the writer, between two groups, finishes the last
//! few frames itself.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use super::{SqliteOptions, functions};
use crate::error::{StoreError, StoreResult};

/// Most pieces of work committed in one transaction.
const MAX_GROUP: usize = 512;

/// How often the checkpointer copies committed pages into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// WAL length (in pages) past which the writer completes a checkpoint so
/// the WAL restarts from its beginning (16 MiB at 4 KiB pages).
const WAL_RESTART_FRAMES: i64 = 4096;

type ReadTask = Box<dyn FnOnce(&Connection) + Send>;

/// What the writer thread owns.
pub(super) struct WriterState {
    pub conn: Connection,
    /// Class tables known to exist.
    pub tables: HashSet<String>,
    /// Set by the checkpointer when the WAL has grown long.
    wal_long: Arc<AtomicBool>,
}

/// A unit of work for the writer: `run` inside the group's transaction,
/// then `finish` once the transaction's fate is known.
trait WriteTask: Send {
    /// Runs the work; `false` means it failed and must be rolled back.
    fn run(&mut self, state: &mut WriterState) -> bool;
    fn finish(self: Box<Self>, commit: StoreResult<()>);
}

struct Task<T, F> {
    work: Option<F>,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> WriteTask for Task<T, F>
where
    T: Send,
    F: FnOnce(&mut WriterState) -> StoreResult<T> + Send,
{
    fn run(&mut self, state: &mut WriterState) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| work(state)))
            .unwrap_or_else(|_| Err(StoreError::backend_message("write task panicked")));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, commit: StoreResult<()>) {
        let result = match commit {
            Ok(()) => self
                .result
                .unwrap_or_else(|| Err(StoreError::backend_message("write task did not run"))),
            Err(err) => Err(err),
        };
        let _ = self.reply.send(result);
    }
}

pub(super) struct Engine {
    readers: Sender<ReadTask>,
    writer: Sender<Box<dyn WriteTask>>,
    /// Dropped with the engine, which stops the checkpointer.
    _checkpointer: Sender<()>,
}

impl Engine {
    pub fn start(
        path: &Path,
        options: &SqliteOptions,
        writer_conn: Connection,
    ) -> StoreResult<Self> {
        writer_conn
            .execute_batch("PRAGMA wal_autocheckpoint = 0")
            .map_err(StoreError::backend)?;
        let wal_long = Arc::new(AtomicBool::new(false));
        let checkpoint_conn = connect(path, options, false)?;
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let flag = Arc::clone(&wal_long);
        std::thread::Builder::new()
            .name("oxbase-sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stop_rx.recv_timeout(CHECKPOINT_EVERY)
                {
                    // PASSIVE never waits for the writer or readers; what it
                    // cannot copy now it copies on a later round.
                    match checkpoint(&checkpoint_conn) {
                        Ok(frames) => flag.store(frames >= WAL_RESTART_FRAMES, Ordering::Relaxed),
                        Err(err) => tracing::warn!(%err, "sqlite checkpoint failed"),
                    }
                }
            })
            .map_err(StoreError::backend)?;

        let (write_tx, write_rx) = crossbeam_channel::unbounded::<Box<dyn WriteTask>>();
        let mut state = WriterState {
            conn: writer_conn,
            tables: HashSet::new(),
            wal_long,
        };
        std::thread::Builder::new()
            .name("oxbase-sqlite-writer".into())
            .spawn(move || writer_loop(&mut state, write_rx))
            .map_err(StoreError::backend)?;

        let (read_tx, read_rx) = crossbeam_channel::unbounded::<ReadTask>();
        for i in 0..options.readers.max(1) {
            let conn = connect(path, options, false)?;
            let rx = read_rx.clone();
            let timeout = options.query_timeout;
            std::thread::Builder::new()
                .name(format!("oxbase-sqlite-reader-{i}"))
                .spawn(move || {
                    while let Ok(task) = rx.recv() {
                        // Checked every few thousand VM steps: a read past
                        // its deadline fails with SQLITE_INTERRUPT.
                        if let Some(limit) = timeout {
                            let deadline = std::time::Instant::now() + limit;
                            conn.progress_handler(
                                4096,
                                Some(move || std::time::Instant::now() > deadline),
                            );
                        }
                        task(&conn);
                    }
                })
                .map_err(StoreError::backend)?;
        }
        Ok(Self {
            readers: read_tx,
            writer: write_tx,
            _checkpointer: stop_tx,
        })
    }

    pub async fn read<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let task: ReadTask = Box::new(move |conn| {
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| work(conn)))
                .unwrap_or_else(|_| Err(StoreError::backend_message("read task panicked")));
            let _ = tx.send(result);
        });
        self.readers
            .send(task)
            .map_err(|_| StoreError::backend_message("sqlite readers stopped"))?;
        rx.await
            .map_err(|_| StoreError::backend_message("sqlite reader dropped a request"))?
    }

    pub async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriterState) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.submit(work, tx)?;
        rx.await
            .map_err(|_| StoreError::backend_message("sqlite writer dropped a request"))?
    }

    /// Queues write work without waiting for it.
    pub fn write_detached<F>(&self, work: F)
    where
        F: FnOnce(&mut WriterState) -> StoreResult<()> + Send + 'static,
    {
        let (tx, _rx) = oneshot::channel();
        let _ = self.submit(work, tx);
    }

    fn submit<T, F>(&self, work: F, reply: oneshot::Sender<StoreResult<T>>) -> StoreResult<()>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriterState) -> StoreResult<T> + Send + 'static,
    {
        let task = Task {
            work: Some(work),
            result: None,
            reply,
        };
        self.writer
            .send(Box::new(task))
            .map_err(|_| StoreError::backend_message("sqlite writer stopped"))
    }
}

pub(super) fn connect(
    path: &Path,
    options: &SqliteOptions,
    writer: bool,
) -> StoreResult<Connection> {
    let flags = if writer {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(StoreError::backend)?;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {};
         PRAGMA busy_timeout = 10000;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -32000;",
        options.synchronous
    ))
    .map_err(StoreError::backend)?;
    conn.set_prepared_statement_cache_capacity(256);
    functions::register(&conn).map_err(StoreError::backend)?;
    Ok(conn)
}

/// Runs a transaction-control statement through the statement cache:
/// these run several times per write, and parsing them each time shows.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// A passive checkpoint; returns how many pages the WAL holds.
fn checkpoint(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))
}

fn writer_loop(state: &mut WriterState, rx: Receiver<Box<dyn WriteTask>>) {
    while let Ok(first) = rx.recv() {
        if state.wal_long.swap(false, Ordering::Relaxed)
            && let Err(err) = checkpoint(&state.conn)
        {
            tracing::warn!(%err, "sqlite checkpoint failed");
        }
        let mut tasks = vec![first];
        while tasks.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(task) => tasks.push(task),
                Err(_) => break,
            }
        }
        if let Err(err) = exec(&state.conn, "BEGIN IMMEDIATE") {
            let err = StoreError::backend(err);
            for task in tasks {
                task.finish(Err(err.clone()));
            }
            continue;
        }
        for task in tasks.iter_mut() {
            let _ = exec(&state.conn, "SAVEPOINT task");
            if !task.run(state) {
                let _ = exec(&state.conn, "ROLLBACK TO task");
                // A table created by the rolled-back work is gone again.
                state.tables.clear();
            }
            let _ = exec(&state.conn, "RELEASE task");
        }
        let commit = exec(&state.conn, "COMMIT").map_err(StoreError::backend);
        if commit.is_err() {
            let _ = exec(&state.conn, "ROLLBACK");
            state.tables.clear();
        }
        for task in tasks {
            task.finish(commit.clone());
        }
    }
}

/// Runs `work` in a savepoint of the writer's transaction, rolling back
/// its changes if it fails.
pub(super) fn in_savepoint<T>(
    state: &mut WriterState,
    work: impl FnOnce(&mut WriterState) -> StoreResult<T>,
) -> StoreResult<T> {
    exec(&state.conn, "SAVEPOINT op").map_err(StoreError::backend)?;
    let result = work(state);
    if result.is_err() {
        let _ = exec(&state.conn, "ROLLBACK TO op");
        state.tables.clear();
    }
    exec(&state.conn, "RELEASE op").map_err(StoreError::backend)?;
    result
}
