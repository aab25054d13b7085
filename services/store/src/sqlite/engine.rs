//! The threads behind the SQLite backend: one writer that group-commits,
//! and a pool of readers. Async callers hand them closures and await the
//! answer.
//!
//! The writer commits whatever work is queued together in one transaction,
//! each piece in its own savepoint so one failure does not undo the others,
//! and answers only after COMMIT. Readers each own a connection; WAL mode
//! lets them read while the writer writes.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::path::Path;

use crossbeam_channel::{Receiver, Sender};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use super::{SqliteOptions, functions};
use crate::error::{StoreError, StoreResult};

/// Most pieces of work committed in one transaction.
const MAX_GROUP: usize = 512;

type ReadTask = Box<dyn FnOnce(&Connection) + Send>;

/// What the writer thread owns.
pub(super) struct WriterState {
    pub conn: Connection,
    /// Class tables known to exist.
    pub tables: HashSet<String>,
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
            .unwrap_or_else(|_| Err(StoreError::Backend("write task panicked".into())));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, commit: StoreResult<()>) {
        let result = match commit {
            Ok(()) => self
                .result
                .unwrap_or_else(|| Err(StoreError::Backend("write task did not run".into()))),
            Err(err) => Err(err),
        };
        let _ = self.reply.send(result);
    }
}

pub(super) struct Engine {
    readers: Sender<ReadTask>,
    writer: Sender<Box<dyn WriteTask>>,
}

impl Engine {
    pub fn start(
        path: &Path,
        options: &SqliteOptions,
        writer_conn: Connection,
    ) -> StoreResult<Self> {
        let (write_tx, write_rx) = crossbeam_channel::unbounded::<Box<dyn WriteTask>>();
        let mut state = WriterState {
            conn: writer_conn,
            tables: HashSet::new(),
        };
        std::thread::Builder::new()
            .name("oxbase-sqlite-writer".into())
            .spawn(move || writer_loop(&mut state, write_rx))
            .map_err(StoreError::backend)?;

        let (read_tx, read_rx) = crossbeam_channel::unbounded::<ReadTask>();
        for i in 0..options.readers.max(1) {
            let conn = connect(path, options, false)?;
            let rx = read_rx.clone();
            std::thread::Builder::new()
                .name(format!("oxbase-sqlite-reader-{i}"))
                .spawn(move || {
                    while let Ok(task) = rx.recv() {
                        task(&conn);
                    }
                })
                .map_err(StoreError::backend)?;
        }
        Ok(Self {
            readers: read_tx,
            writer: write_tx,
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
                .unwrap_or_else(|_| Err(StoreError::Backend("read task panicked".into())));
            let _ = tx.send(result);
        });
        self.readers
            .send(task)
            .map_err(|_| StoreError::Backend("sqlite readers stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Backend("sqlite reader dropped a request".into()))?
    }

    pub async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriterState) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.submit(work, tx)?;
        rx.await
            .map_err(|_| StoreError::Backend("sqlite writer dropped a request".into()))?
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
            .map_err(|_| StoreError::Backend("sqlite writer stopped".into()))
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

fn writer_loop(state: &mut WriterState, rx: Receiver<Box<dyn WriteTask>>) {
    while let Ok(first) = rx.recv() {
        let mut tasks = vec![first];
        while tasks.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(task) => tasks.push(task),
                Err(_) => break,
            }
        }
        if let Err(err) = state.conn.execute_batch("BEGIN IMMEDIATE") {
            let err = StoreError::backend(err);
            for task in tasks {
                task.finish(Err(err.clone()));
            }
            continue;
        }
        for task in tasks.iter_mut() {
            let _ = state.conn.execute_batch("SAVEPOINT task");
            if !task.run(state) {
                let _ = state.conn.execute_batch("ROLLBACK TO task");
                // A table created by the rolled-back work is gone again.
                state.tables.clear();
            }
            let _ = state.conn.execute_batch("RELEASE task");
        }
        let commit = state
            .conn
            .execute_batch("COMMIT")
            .map_err(StoreError::backend);
        if commit.is_err() {
            let _ = state.conn.execute_batch("ROLLBACK");
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
    state
        .conn
        .execute_batch("SAVEPOINT op")
        .map_err(StoreError::backend)?;
    let result = work(state);
    if result.is_err() {
        let _ = state.conn.execute_batch("ROLLBACK TO op");
        state.tables.clear();
    }
    state
        .conn
        .execute_batch("RELEASE op")
        .map_err(StoreError::backend)?;
    result
}
