//! One WebSocket connection: Parse's `connect`, `subscribe`, `update` and
//! `unsubscribe`, answered in order, while the dispatch queues events.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use oxbase_objects::{Auth, Credentials, FindOptions, ParseError, code};
use oxbase_proto::{Caller, LiveQueryTriggerRequest, TriggerName};
use oxbase_store::matcher::Matcher;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::hub::Hub;
use crate::member::{ClientHandle, Member, MemberAccess};
use crate::protocol::{self, ClientMessage, Connect, RequestId, Subscribe};
use crate::replay;

/// How stale the schemas (and so the class-level permissions) may be when
/// a subscription is checked: other processes may have changed them.
pub(crate) const SCHEMA_MAX_AGE: Duration = Duration::from_secs(1);

/// A subscription as its connection remembers it.
struct Subscribed {
    class_name: String,
    key: String,
    member: Arc<Member>,
}

struct Connection {
    hub: Arc<Hub>,
    ip: IpAddr,
    /// Set by `connect`.
    client: Option<Connected>,
    subscriptions: HashMap<RequestId, Subscribed>,
    outbox: mpsc::Sender<String>,
}

struct Connected {
    handle: Arc<ClientHandle>,
    auth: Auth,
    session_token: Option<String>,
}

/// Serves one socket until either side closes it.
pub async fn serve(hub: Arc<Hub>, socket: WebSocket, ip: IpAddr) {
    let (mut sink, mut stream) = socket.split();
    let (outbox, mut queued) = mpsc::channel::<String>(hub.config.send_queue);
    let mut connection = Connection {
        hub: Arc::clone(&hub),
        ip,
        client: None,
        subscriptions: HashMap::new(),
        outbox,
    };
    let ping_every = Duration::from_millis(hub.config.ping_interval_ms);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    let mut awaiting_pong = false;
    loop {
        let handle = connection.client.as_ref().map(|c| Arc::clone(&c.handle));
        let dropped = async move {
            match handle {
                Some(handle) => handle.drop_signal.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => connection.handle(text.as_str()).await,
                Some(Ok(Message::Binary(_))) => connection.send(protocol::error(
                    protocol::code::BAD_MESSAGE, "Messages are JSON text", true, None)),
                Some(Ok(Message::Pong(_))) => awaiting_pong = false,
                Some(Ok(Message::Ping(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            },
            Some(text) = queued.recv() => {
                if sink.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            _ = ping.tick() => {
                // Parse Server drops a client that left the last ping
                // unanswered.
                if awaiting_pong || sink.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
                awaiting_pong = true;
            }
            () = dropped => {
                hub.metrics.dropped_clients.fetch_add(1, Ordering::Relaxed);
                tracing::info!("dropping a LiveQuery client that fell behind");
                break;
            }
        }
    }
    connection.close();
    let _ = sink.close().await;
}

impl Connection {
    fn send(&self, text: String) {
        match &self.client {
            Some(client) => client.handle.send(text),
            // Before `connect` only errors are sent, and few.
            None => {
                let _ = self.outbox.try_send(text);
            }
        }
    }

    fn fail(&self, err: &ParseError, request_id: Option<&RequestId>) {
        let body = err.body();
        let code = body
            .get("code")
            .and_then(Value::as_i64)
            .and_then(|c| i32::try_from(c).ok())
            .unwrap_or(code::OPERATION_FORBIDDEN);
        let message = body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or_default();
        self.send(protocol::error(code, message, false, request_id));
    }

    async fn handle(&mut self, text: &str) {
        if text.len() > self.hub.config.max_message_bytes {
            return self.send(protocol::error(
                protocol::code::BAD_MESSAGE,
                "Message too large",
                false,
                None,
            ));
        }
        let message = match protocol::parse_client_message(text) {
            Ok(message) => message,
            Err(err) => {
                return self.send(protocol::error(
                    protocol::code::BAD_MESSAGE,
                    &err.0,
                    true,
                    None,
                ));
            }
        };
        match message {
            ClientMessage::Connect(connect) => self.connect(connect).await,
            ClientMessage::Subscribe(subscribe) => self.subscribe(subscribe).await,
            ClientMessage::Update(subscribe) => {
                self.unsubscribe(&subscribe.request_id, false);
                self.subscribe(subscribe).await;
            }
            ClientMessage::Unsubscribe(request_id) => self.unsubscribe(&request_id, true),
        }
    }

    async fn connect(&mut self, connect: Connect) {
        if !self.hub.is_live() {
            return self.send(protocol::error(
                protocol::code::UNAVAILABLE,
                "LiveQuery is not following the event stream yet",
                true,
                None,
            ));
        }
        let credentials = Credentials {
            app_id: Some(connect.application_id),
            master_key: connect.master_key,
            javascript_key: connect.javascript_key,
            client_key: connect.client_key,
            rest_api_key: connect.rest_api_key,
            dotnet_key: connect.windows_key,
            installation_id: connect.installation_id.clone(),
            ..Credentials::default()
        };
        let Ok(mut auth) = self.hub.keys.auth(&credentials, self.ip) else {
            return self.send(protocol::error(
                protocol::code::BAD_KEYS,
                "Key in request is not valid",
                true,
                None,
            ));
        };
        if self.client.is_none()
            && self.hub.clients.load(Ordering::Relaxed) >= self.hub.config.max_connections
        {
            return self.send(protocol::error(
                protocol::code::UNAVAILABLE,
                "This LiveQuery server holds all the connections it may",
                true,
                None,
            ));
        }
        // As in Parse Server, a token that resolves to no session leaves
        // the client connected as nobody in particular.
        if let Some(token) = &connect.session_token
            && !auth.master
        {
            auth.user = self.hub.objects.session_user(token).await.ok();
        }
        if let Err(err) = self
            .before_connect(&auth, connect.session_token.as_deref())
            .await
        {
            return self.fail(&err, None);
        }
        self.close();
        let handle = Arc::new(ClientHandle::new(
            uuid::Uuid::new_v4().to_string(),
            connect.installation_id,
            self.outbox.clone(),
        ));
        self.hub.clients.fetch_add(1, Ordering::Relaxed);
        handle.send(protocol::reply(
            "connected",
            &handle.id,
            handle.installation_id.as_deref(),
            None,
        ));
        self.client = Some(Connected {
            handle,
            auth,
            session_token: connect.session_token,
        });
    }

    async fn before_connect(
        &self,
        auth: &Auth,
        session_token: Option<&str>,
    ) -> Result<(), ParseError> {
        let class_name = oxbase_proto::hooks::CONNECT_CLASS;
        // Any success lets the client in.
        self.run_hook(
            TriggerName::BeforeConnect,
            class_name,
            auth,
            LiveQueryTriggerRequest {
                trigger_name: TriggerName::BeforeConnect,
                class_name: class_name.into(),
                event: "connect".into(),
                query: None,
                object: None,
                original: None,
                clients: self.hub.clients.load(Ordering::Relaxed) as u64,
                subscriptions: self.hub.subscriptions() as u64,
                session_token: session_token.map(str::to_owned),
                caller: Caller::default(),
            },
        )
        .await
        .map(drop)
    }

    /// Calls a LiveQuery hook when one is registered, with the caller
    /// filled in from `auth`; `Ok(None)` when there is none.
    async fn run_hook(
        &self,
        trigger: TriggerName,
        class_name: &str,
        auth: &Auth,
        mut request: LiveQueryTriggerRequest,
    ) -> Result<Option<Value>, ParseError> {
        let Some(hooks) = &self.hub.hooks else {
            return Ok(None);
        };
        let Some(entry) = hooks
            .trigger(class_name, trigger)
            .await
            .map_err(|err| ParseError::Unavailable(err.to_string()))?
        else {
            return Ok(None);
        };
        request.caller = Caller {
            master: auth.master,
            user: self.user_object(auth).await,
            installation_id: auth.installation_id.clone(),
            ..Caller::default()
        };
        let reply = hooks
            .call_trigger(&entry, class_name, trigger, &request, None)
            .await
            .map_err(|err| {
                ParseError::new(
                    code::SCRIPT_FAILED,
                    format!("The {trigger} hook of {class_name} failed: {err}"),
                )
            })?;
        if let Some(err) = reply.error {
            let code = err
                .code()
                .and_then(|c| i32::try_from(c).ok())
                .unwrap_or(code::SCRIPT_FAILED);
            return Err(ParseError::new(code, err.message()));
        }
        Ok(reply.success)
    }

    /// The signed-in user as they see themselves, for before-hooks.
    async fn user_object(&self, auth: &Auth) -> Option<Map<String, Value>> {
        let id = auth.user_id()?;
        let objects = &self.hub.objects;
        let options = FindOptions::for_get(&Map::new(), objects.limits()).ok()?;
        objects.get(auth, "_User", id, &options).await.ok()
    }

    async fn subscribe(&mut self, subscribe: Subscribe) {
        let request_id = subscribe.request_id.clone();
        if let Err(err) = self.try_subscribe(subscribe).await {
            self.fail(&err, Some(&request_id));
        }
    }

    async fn try_subscribe(&mut self, mut subscribe: Subscribe) -> Result<(), ParseError> {
        if self.client.is_none() {
            self.send(protocol::error(
                protocol::code::NOT_CONNECTED,
                "Can not find this client, make sure you connect to server before subscribing",
                true,
                None,
            ));
            return Ok(());
        };
        let class_name = subscribe.query.class_name.clone();
        let allowed = &self.hub.config.class_names;
        if !allowed.is_empty() && !allowed.contains(&class_name) {
            return Err(ParseError::new(
                code::OPERATION_FORBIDDEN,
                format!("LiveQuery is not enabled for class {class_name}"),
            ));
        }
        // Replacing a subscription under the same id drops the old one.
        self.unsubscribe(&subscribe.request_id, false);
        let Some(client) = &self.client else {
            return Ok(());
        };
        if self.subscriptions.len() >= self.hub.config.max_subscriptions {
            return Err(ParseError::new(
                code::OPERATION_FORBIDDEN,
                "Too many subscriptions on one connection",
            ));
        }
        let mut auth = client.auth.clone();
        let mut session_token = client.session_token.clone();
        if let Some(token) = &subscribe.session_token
            && !auth.master
        {
            auth.user = self.hub.objects.session_user(token).await.ok();
            session_token = Some(token.clone());
        }
        if let Some(success) = self
            .run_hook(
                TriggerName::BeforeSubscribe,
                &class_name,
                &auth,
                LiveQueryTriggerRequest {
                    trigger_name: TriggerName::BeforeSubscribe,
                    class_name: class_name.clone(),
                    event: "subscribe".into(),
                    query: Some(subscribe.query.to_json()),
                    object: None,
                    original: None,
                    clients: self.hub.clients.load(Ordering::Relaxed) as u64,
                    subscriptions: self.hub.subscriptions() as u64,
                    session_token: session_token.clone(),
                    caller: Caller::default(),
                },
            )
            .await?
        {
            rewrite_query(&mut subscribe, &success)?;
        }
        let watch = subscribe.query.watch.clone().unwrap_or_default();
        self.hub.objects.refresh_schemas(SCHEMA_MAX_AGE).await;
        let access = self
            .hub
            .objects
            .live_access(&auth, &class_name, &subscribe.query.where_, &watch)
            .await?;
        let matcher = Matcher::new(&access.filter)
            .map_err(|err| ParseError::new(code::INVALID_QUERY, err.to_string()))?;
        let key = format!("{:?}", access.filter);
        let Some(client) = &self.client else {
            return Ok(());
        };
        let after = subscribe.last_event_id;
        let member = Arc::new(Member {
            client: Arc::clone(&client.handle),
            request_id: subscribe.request_id.clone(),
            principals: std::sync::RwLock::new(auth.principals()),
            auth,
            session_token,
            where_: subscribe.query.where_,
            access: std::sync::RwLock::new(MemberAccess {
                permissions: access.permissions,
                protected: access.protected,
                denied: false,
            }),
            keys: subscribe.query.keys,
            watch: subscribe.query.watch,
            after: after.unwrap_or(0),
            held: std::sync::Mutex::new(after.map(|_| Vec::new())),
        });
        let subscribed = protocol::reply(
            "subscribed",
            &client.handle.id,
            client.handle.installation_id.as_deref(),
            Some(&subscribe.request_id),
        );
        let (position, group) = self.hub.insert(
            &class_name,
            key.clone(),
            &access.filter,
            matcher,
            Arc::clone(&member),
            Some(subscribed),
        );
        if let Some(since) = after {
            tokio::spawn(replay::replay(
                Arc::clone(&self.hub),
                class_name.clone(),
                group,
                Arc::clone(&member),
                since,
                position,
            ));
        }
        self.subscriptions.insert(
            subscribe.request_id,
            Subscribed {
                class_name,
                key,
                member,
            },
        );
        Ok(())
    }

    fn unsubscribe(&mut self, request_id: &RequestId, notify: bool) {
        let Some(client) = &self.client else {
            if notify {
                self.send(protocol::error(
                    protocol::code::NOT_CONNECTED,
                    "Can not find this client, make sure you connect to server before unsubscribing",
                    true,
                    None,
                ));
            }
            return;
        };
        let Some(subscribed) = self.subscriptions.remove(request_id) else {
            if notify {
                client.handle.send(protocol::error(
                    protocol::code::NOT_CONNECTED,
                    &format!(
                        "Cannot find subscription with clientId {} subscriptionId {}. Make sure you subscribe to live query server before unsubscribing.",
                        client.handle.id,
                        request_id.as_json()
                    ),
                    true,
                    Some(request_id),
                ));
            }
            return;
        };
        self.hub
            .remove(&subscribed.class_name, &subscribed.key, &subscribed.member);
        if notify {
            client.handle.send(protocol::reply(
                "unsubscribed",
                &client.handle.id,
                client.handle.installation_id.as_deref(),
                Some(request_id),
            ));
        }
    }

    /// Forgets the client and its subscriptions.
    fn close(&mut self) {
        for (_, subscribed) in self.subscriptions.drain() {
            self.hub
                .remove(&subscribed.class_name, &subscribed.key, &subscribed.member);
        }
        if self.client.take().is_some() {
            self.hub.clients.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A beforeSubscribe's `{"query": {...}}` replaces the query's `where`,
/// `keys` and `watch`.
fn rewrite_query(subscribe: &mut Subscribe, success: &Value) -> Result<(), ParseError> {
    let Some(query) = success.get("query").and_then(Value::as_object) else {
        return Ok(());
    };
    let mut rewritten = query.clone();
    rewritten.insert(
        "className".into(),
        Value::from(subscribe.query.class_name.clone()),
    );
    rewritten
        .entry("where")
        .or_insert_with(|| Value::Object(Map::new()));
    rewritten.retain(|key, value| {
        matches!(key.as_str(), "className" | "where" | "keys" | "watch") && !value.is_null()
    });
    // The JS SDK's `toJSON` writes `keys` and `watch` comma-separated.
    for list in ["keys", "watch"] {
        if let Some(Value::String(joined)) = rewritten.get(list) {
            let items: Vec<Value> = joined.split(',').map(Value::from).collect();
            rewritten.insert(list.into(), Value::Array(items));
        }
    }
    let message = serde_json::json!({
        "op": "subscribe", "requestId": 0, "query": rewritten,
    });
    match protocol::parse_client_message(&message.to_string()) {
        Ok(ClientMessage::Subscribe(parsed)) => {
            subscribe.query = parsed.query;
            Ok(())
        }
        _ => Err(ParseError::new(
            code::SCRIPT_FAILED,
            "beforeSubscribe returned a query that is not one",
        )),
    }
}
