//! The triggers beside the object writes': `beforeFind` and `afterFind`
//! around queries, `beforeLogin`, `afterLogin` and `afterLogout`, and the
//! file triggers. Each costs a registry lookup when no hook is registered.

use base64::Engine;
use bytes::Bytes;
use oxbase_objects::{Auth, ParseError, ParseResult, code};
use oxbase_proto::hooks::{FILE_BYTES_SHOWN, FILE_CLASS};
use oxbase_proto::{FileInfo, FileTriggerRequest, FindTriggerRequest, TriggerName, TriggerRequest};
use oxbase_store::Object;
use serde_json::{Map, Value};

use crate::App;
use crate::request::ParseRequest;

/// The members of a Parse query that `beforeFind` sees and may replace, as
/// `Parse.Query#toJSON()` names them.
const QUERY_MEMBERS: &[&str] = &[
    "where",
    "limit",
    "skip",
    "order",
    "keys",
    "include",
    "excludeKeys",
];

/// What a `beforeSaveFile` hook made of the file.
pub(crate) struct SavedFile {
    pub name: String,
    /// The file's bytes: the upload's when it was small enough to hold,
    /// the hook's when it gave new ones; `None` for a large upload still
    /// streaming in.
    pub bytes: Option<Bytes>,
    /// The file's size, when known.
    pub size: Option<u64>,
    pub content_type: Option<String>,
}

/// The query in `params`; `where` is always there, as in `toJSON()`.
fn query_of(params: &Map<String, Value>) -> Map<String, Value> {
    let mut query: Map<String, Value> = QUERY_MEMBERS
        .iter()
        .filter_map(|key| Some(((*key).to_owned(), params.get(*key)?.clone())))
        .collect();
    query
        .entry("where")
        .or_insert_with(|| Value::Object(Map::new()));
    query
}

fn with_class(mut object: Object, class_name: &str) -> Object {
    object.insert("className".into(), Value::from(class_name));
    object
}

/// An object a hook answered, as a REST result: without the members
/// `Parse.Object#toJSON()` may add.
fn as_result(value: Value) -> ParseResult<Object> {
    match value {
        Value::Object(mut object) => {
            object.remove("__type");
            object.remove("className");
            Ok(object)
        }
        _ => Err(ParseError::new(
            code::SCRIPT_FAILED,
            "afterFind answered something that is not an object",
        )),
    }
}

impl App {
    /// Runs the class's beforeFind hook on the query in `params`. Answers
    /// whether the hook replaced the query, whose members are then the
    /// hook's.
    pub(crate) async fn before_find(
        &self,
        auth: &Auth,
        req: &ParseRequest,
        class_name: &str,
        params: &mut Map<String, Value>,
        is_get: bool,
    ) -> ParseResult<bool> {
        let Some((runner, entry)) = self.registered(class_name, TriggerName::BeforeFind).await?
        else {
            return Ok(false);
        };
        let count = match params.get("count") {
            Some(Value::Bool(count)) => *count,
            Some(Value::Number(n)) => n.as_f64() != Some(0.0),
            Some(Value::String(text)) => text == "1" || text == "true",
            _ => false,
        };
        let request = FindTriggerRequest {
            trigger_name: TriggerName::BeforeFind,
            class_name: class_name.to_owned(),
            query: query_of(params),
            count,
            is_get,
            objects: None,
            caller: self.caller(auth, req).await,
        };
        let reply = self
            .run_hook(
                runner,
                &entry,
                (class_name, TriggerName::BeforeFind),
                &request,
                auth,
                code::SCRIPT_FAILED,
            )
            .await?;
        let Some(Value::Object(mut success)) = reply.success else {
            return Ok(false);
        };
        let Some(Value::Object(query)) = success.remove("query") else {
            return Ok(false);
        };
        if query == request.query {
            return Ok(false);
        }
        for key in QUERY_MEMBERS {
            params.remove(*key);
        }
        for (key, value) in query {
            if QUERY_MEMBERS.contains(&key.as_str()) {
                params.insert(key, value);
            }
        }
        Ok(true)
    }

    /// Runs the class's afterFind hook on the results of the query in
    /// `params`; its answer replaces them.
    pub(crate) async fn after_find(
        &self,
        auth: &Auth,
        req: &ParseRequest,
        class_name: &str,
        params: &Map<String, Value>,
        results: &mut Vec<Object>,
    ) -> ParseResult<()> {
        let Some((runner, entry)) = self.registered(class_name, TriggerName::AfterFind).await?
        else {
            return Ok(());
        };
        let request = FindTriggerRequest {
            trigger_name: TriggerName::AfterFind,
            class_name: class_name.to_owned(),
            query: query_of(params),
            count: false,
            is_get: false,
            objects: Some(
                results
                    .iter()
                    .map(|o| with_class(o.clone(), class_name))
                    .collect(),
            ),
            caller: self.caller(auth, req).await,
        };
        let reply = self
            .run_hook(
                runner,
                &entry,
                (class_name, TriggerName::AfterFind),
                &request,
                auth,
                code::SCRIPT_FAILED,
            )
            .await?;
        if let Some(Value::Array(objects)) = reply.success {
            *results = objects
                .into_iter()
                .map(as_result)
                .collect::<ParseResult<_>>()?;
        }
        Ok(())
    }

    /// Runs `trigger` (beforeLogin, afterLogin or afterLogout) with
    /// `object`, the user or the ended session. `user` is the signed-in
    /// user to show, when the request's own session is not it.
    pub(crate) async fn session_trigger(
        &self,
        auth: &Auth,
        req: &ParseRequest,
        trigger: TriggerName,
        object: &Object,
        user: Option<&Object>,
    ) -> ParseResult<()> {
        let class_name = trigger.only_class().unwrap_or("_User");
        let Some((runner, entry)) = self.registered(class_name, trigger).await? else {
            return Ok(());
        };
        let mut caller = self.caller(auth, req).await;
        if let Some(user) = user {
            caller.user = Some(with_class(user.clone(), "_User"));
        }
        let mut object = object.clone();
        object.retain(|key, _| !key.starts_with('_'));
        let request = TriggerRequest {
            trigger_name: trigger,
            object: with_class(object, class_name),
            original: None,
            event_id: None,
            caller,
        };
        self.run_hook(
            runner,
            &entry,
            (class_name, trigger),
            &request,
            auth,
            code::SCRIPT_FAILED,
        )
        .await?;
        Ok(())
    }

    /// Runs the beforeSaveFile hook on a file about to be stored; answers
    /// the file as the hook left it.
    pub(crate) async fn before_save_file(
        &self,
        auth: &Auth,
        req: &ParseRequest,
        file: SavedFile,
    ) -> ParseResult<SavedFile> {
        let trigger = TriggerName::BeforeSaveFile;
        let Some((runner, entry)) = self.registered(FILE_CLASS, trigger).await? else {
            return Ok(file);
        };
        let engine = base64::engine::general_purpose::STANDARD;
        let request = FileTriggerRequest {
            trigger_name: trigger,
            file: FileInfo {
                name: Some(file.name.clone()),
                url: None,
                content_type: file.content_type.clone(),
                base64: file
                    .bytes
                    .as_ref()
                    .filter(|bytes| bytes.len() <= FILE_BYTES_SHOWN)
                    .map(|bytes| engine.encode(bytes)),
            },
            file_size: file.size,
            caller: self.caller(auth, req).await,
        };
        let reply = self
            .run_hook(
                runner,
                &entry,
                (FILE_CLASS, trigger),
                &request,
                auth,
                code::FILE_SAVE_ERROR,
            )
            .await?;
        let Some(Value::Object(mut success)) = reply.success else {
            return Ok(file);
        };
        let Some(Value::Object(returned)) = success.remove("file") else {
            return Ok(file);
        };
        let returned: FileInfo = serde_json::from_value(Value::Object(returned)).map_err(|e| {
            ParseError::new(
                code::FILE_SAVE_ERROR,
                format!("beforeSaveFile answered an invalid file: {e}"),
            )
        })?;
        let (bytes, size) = match returned.base64 {
            Some(text) => {
                let bytes = engine.decode(text.as_bytes()).map_err(|_| {
                    ParseError::new(
                        code::FILE_SAVE_ERROR,
                        "beforeSaveFile answered a file whose base64 does not decode",
                    )
                })?;
                let size = bytes.len() as u64;
                (Some(Bytes::from(bytes)), Some(size))
            }
            None => (file.bytes, file.size),
        };
        Ok(SavedFile {
            name: returned.name.unwrap_or(file.name),
            bytes,
            size,
            content_type: returned.content_type.or(file.content_type),
        })
    }

    /// Runs a file trigger other than beforeSaveFile: afterSaveFile (with
    /// the stored file's size), beforeDeleteFile or afterDeleteFile.
    pub(crate) async fn file_trigger(
        &self,
        auth: &Auth,
        req: &ParseRequest,
        trigger: TriggerName,
        file: FileInfo,
        file_size: Option<u64>,
    ) -> ParseResult<()> {
        let Some((runner, entry)) = self.registered(FILE_CLASS, trigger).await? else {
            return Ok(());
        };
        let default_code = match trigger {
            TriggerName::AfterSaveFile => code::FILE_SAVE_ERROR,
            _ => code::FILE_DELETE_ERROR,
        };
        let request = FileTriggerRequest {
            trigger_name: trigger,
            file,
            file_size,
            caller: self.caller(auth, req).await,
        };
        self.run_hook(
            runner,
            &entry,
            (FILE_CLASS, trigger),
            &request,
            auth,
            default_code,
        )
        .await?;
        Ok(())
    }
}
