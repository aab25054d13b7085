//! A connected client, and each of its subscriptions as the event
//! dispatch sees them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

use oxbase_objects::Auth;
use tokio::sync::{Notify, mpsc};

use crate::protocol::RequestId;

/// What the dispatch needs of a connection: where its messages go.
pub struct ClientHandle {
    /// Parse's `clientId`.
    pub id: String,
    pub installation_id: Option<String>,
    outbox: mpsc::Sender<String>,
    /// Set once the client fell too far behind; its connection closes.
    dropped: AtomicBool,
    pub drop_signal: Notify,
}

impl ClientHandle {
    pub fn new(id: String, installation_id: Option<String>, outbox: mpsc::Sender<String>) -> Self {
        Self {
            id,
            installation_id,
            outbox,
            dropped: AtomicBool::new(false),
            drop_signal: Notify::new(),
        }
    }

    /// Queues a message. A client whose queue is full is too slow to keep
    /// up: it is dropped rather than let it hold back everyone's events,
    /// and may reconnect and resume from its last `eventId`.
    pub fn send(&self, text: String) {
        if self.dropped.load(Ordering::Relaxed) {
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = self.outbox.try_send(text) {
            self.dropped.store(true, Ordering::Relaxed);
            self.drop_signal.notify_one();
        }
    }
}

/// What the class's permissions allow one subscription, as of the
/// permissions it was last checked against.
pub struct MemberAccess {
    pub permissions: serde_json::Value,
    pub protected: Vec<String>,
    /// The permissions no longer let it find the class's objects.
    pub denied: bool,
}

/// One subscription of one client.
pub struct Member {
    pub client: std::sync::Arc<ClientHandle>,
    pub request_id: RequestId,
    pub auth: Auth,
    /// `*`, the user and their roles: whom object ACLs are checked for.
    /// Renewed when roles change, and cut to `*` when the session ends.
    pub principals: RwLock<Vec<String>>,
    pub session_token: Option<String>,
    /// The query's `where`, to check the subscription again when the
    /// class's permissions change.
    pub where_: serde_json::Map<String, serde_json::Value>,
    pub access: RwLock<MemberAccess>,
    pub keys: Option<Vec<String>>,
    pub watch: Option<Vec<String>>,
    /// Events at or before this stream position were already sent (or
    /// are being replayed).
    pub after: u64,
    /// While a resume is replaying, live events wait here, in order.
    pub held: Mutex<Option<Vec<String>>>,
}

impl Member {
    /// Sends, or holds the message while a replay runs.
    pub fn deliver(&self, text: String) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        match held.as_mut() {
            Some(queue) => queue.push(text),
            None => self.client.send(text),
        }
    }

    pub fn principals(&self) -> std::sync::RwLockReadGuard<'_, Vec<String>> {
        self.principals.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn access(&self) -> std::sync::RwLockReadGuard<'_, MemberAccess> {
        self.access.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_access(&self, access: MemberAccess) {
        *self.access.write().unwrap_or_else(|e| e.into_inner()) = access;
    }

    pub fn set_principals(&self, principals: Vec<String>) {
        *self.principals.write().unwrap_or_else(|e| e.into_inner()) = principals;
    }

    /// Ends a replay: what was held goes out, then live events flow.
    pub fn release(&self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for text in held.take().unwrap_or_default() {
            self.client.send(text);
        }
    }
}
