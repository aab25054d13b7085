//! Parse's `_Installation` rules: which installation a save lands on, and
//! which duplicates it removes.
//!
//! A device is known by its `installationId` (the SDK's per-install id)
//! and its `deviceToken` (the push token). A save is matched against the
//! stored installations by both, so that a device has one installation:
//! a create whose ids already exist becomes an update of that object, and
//! other installations holding the saved token are removed once the save
//! is committed, as Parse Server does.

use oxbase_store::{Condition, Filter, Object, Query, QueryValue};
use serde_json::{Map, Value};

use crate::ObjectLayer;
use crate::auth::Auth;
use crate::error::{ParseError, ParseResult, code};

pub const CLASS: &str = "_Installation";

/// Where an installation save lands.
#[derive(Debug, Default)]
pub struct Landing {
    /// The installation it updates; `None` creates one.
    pub target: Option<String>,
    /// The body to save: ids normalized, and a create's `objectId` and
    /// `createdAt` dropped when it lands on an existing object.
    pub body: Map<String, Value>,
    /// Installations to delete once the save is committed.
    pub duplicates: Vec<String>,
}

/// The most installations one token's clean-up removes at once: a token
/// belongs to one device, so more is a data problem, not a workload.
const MAX_DUPLICATES: usize = 1000;

fn text<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    body.get(key).and_then(Value::as_str)
}

fn immutable(field: &str) -> ParseError {
    ParseError::new(
        code::CHANGED_IMMUTABLE_FIELD,
        format!("{field} may not be changed in this operation"),
    )
}

impl ObjectLayer {
    /// Applies Parse's installation rules to a create (`object_id` `None`)
    /// or an update of `_Installation`.
    pub async fn land_installation(
        &self,
        auth: &Auth,
        object_id: Option<&str>,
        body: &Map<String, Value>,
    ) -> ParseResult<Landing> {
        let mut body = body.clone();
        let creating = object_id.is_none();
        for key in ["installationId", "deviceToken", "deviceType"] {
            // A device may drop its token (an unset), not change its ids'
            // type.
            let unset = key == "deviceToken"
                && body
                    .get(key)
                    .and_then(|value| value.get("__op"))
                    .is_some_and(|op| op == "Delete");
            if let Some(value) = body.get(key)
                && !value.is_string()
                && !unset
            {
                return Err(ParseError::new(
                    code::INCORRECT_TYPE,
                    format!("{key} must be a string"),
                ));
            }
        }
        let request_installation = auth.installation_id.as_deref().map(str::to_lowercase);
        if creating
            && !body.contains_key("deviceToken")
            && !body.contains_key("installationId")
            && request_installation.is_none()
        {
            return Err(ParseError::new(
                code::MISSING_REQUIRED_FIELD,
                "at least one ID field (deviceToken, installationId) must be specified in this operation",
            ));
        }
        // An iOS token is 64 hex digits, which APNs treats without case.
        if let Some(token) = text(&body, "deviceToken")
            && token.len() == 64
        {
            let lower = token.to_lowercase();
            body.insert("deviceToken".into(), Value::String(lower));
        }
        if let Some(id) = text(&body, "installationId") {
            let lower = id.to_lowercase();
            body.insert("installationId".into(), Value::String(lower));
        }
        let body_installation = text(&body, "installationId").map(str::to_owned);
        // The caller's own installation counts when it is a device, not
        // the master key.
        let installation = body_installation
            .clone()
            .or(request_installation.filter(|_| !auth.master));
        let token = text(&body, "deviceToken").map(str::to_owned);
        if !creating
            && token.is_none()
            && !body.contains_key("deviceType")
            && installation.is_none()
        {
            return Ok(Landing {
                target: object_id.map(str::to_owned),
                body,
                duplicates: Vec::new(),
            });
        }

        let mut any = Vec::new();
        if let Some(id) = object_id {
            any.push(Filter::field("objectId", eq(id)));
        }
        if let Some(id) = &installation {
            any.push(Filter::field("installationId", eq(id)));
        }
        if let Some(token) = &token {
            any.push(Filter::field("deviceToken", eq(token)));
        }
        if any.is_empty() {
            return Ok(Landing {
                target: None,
                body,
                duplicates: Vec::new(),
            });
        }
        let found = self
            .find_all(Query::new(CLASS).filter(Filter::Or(any)))
            .await?;
        let id_of = |object: &Object| {
            object
                .get("objectId")
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let field =
            |object: &Object, key: &str| object.get(key).and_then(Value::as_str).map(str::to_owned);
        let by_object =
            object_id.and_then(|id| found.iter().find(|o| id_of(o).as_deref() == Some(id)));
        let by_installation = installation.as_deref().and_then(|id| {
            found
                .iter()
                .find(|o| field(o, "installationId").as_deref() == Some(id))
        });
        let by_token: Vec<&Object> = match &token {
            Some(token) => found
                .iter()
                .filter(|o| field(o, "deviceToken").as_deref() == Some(token))
                .collect(),
            None => Vec::new(),
        };

        if object_id.is_some() {
            let Some(stored) = by_object else {
                return Err(ParseError::new(
                    code::OBJECT_NOT_FOUND,
                    "Object not found for update.",
                ));
            };
            let stored_installation = field(stored, "installationId");
            if let (Some(new), Some(old)) = (&body_installation, &stored_installation)
                && new != old
            {
                return Err(immutable("installationId"));
            }
            if let Some(new) = &token
                && field(stored, "deviceToken").as_deref() != Some(new)
                && body_installation.is_none()
                && stored_installation.is_none()
            {
                return Err(immutable("deviceToken"));
            }
            if let Some(new) = text(&body, "deviceType")
                && field(stored, "deviceType").as_deref() != Some(new)
            {
                return Err(immutable("deviceType"));
            }
        }

        // The device's own installation: the one with its installationId,
        // else the one the URL names.
        let matched = by_installation.or(by_object);
        if matched.is_none() && !body.contains_key("deviceType") {
            return Err(ParseError::new(
                code::MISSING_REQUIRED_FIELD,
                "deviceType must be specified in this operation",
            ));
        }
        let app = text(&body, "appIdentifier").map(str::to_owned);
        let mut landing = Landing {
            target: None,
            body,
            duplicates: Vec::new(),
        };
        match matched {
            None => match by_token.as_slice() {
                [] => {}
                // A token known before its installationId (an import, say):
                // this save completes that object.
                [only] if field(only, "installationId").is_none() || installation.is_none() => {
                    landing.target = id_of(only);
                }
                _ => {
                    let Some(keep) = &body_installation else {
                        return Err(ParseError::new(
                            code::INVALID_INSTALLATION_ID,
                            "Must specify installationId when deviceToken matches multiple Installation objects",
                        ));
                    };
                    let token = token.as_deref().unwrap_or_default();
                    landing.duplicates = self
                        .holders_of(token, app.as_deref(), |o| {
                            field(o, "installationId").as_deref() != Some(keep)
                        })
                        .await?;
                }
            },
            Some(matched) => {
                let matched_id = id_of(matched);
                match by_token.as_slice() {
                    // The device's installation meets its token's object,
                    // which has no installationId: the token's object
                    // stays, and takes the save.
                    [only]
                        if field(only, "installationId").is_none() && id_of(only) != matched_id =>
                    {
                        landing.target = id_of(only);
                        landing.duplicates.extend(matched_id);
                    }
                    _ => {
                        if let Some(token) = &token
                            && field(matched, "deviceToken").as_deref() != Some(token)
                        {
                            let keep_object = text(&landing.body, "objectId")
                                .filter(|id| Some(*id) == matched_id.as_deref());
                            if body_installation.is_some() || keep_object.is_some() {
                                landing.duplicates = self
                                    .holders_of(token, app.as_deref(), |o| match &body_installation
                                    {
                                        Some(keep) => {
                                            field(o, "installationId").as_deref() != Some(keep)
                                        }
                                        None => id_of(o).as_deref() != keep_object,
                                    })
                                    .await?;
                            }
                        }
                        landing.target = matched_id;
                    }
                }
            }
        }
        if creating && landing.target.is_some() {
            landing.body.remove("objectId");
            landing.body.remove("createdAt");
        }
        if let Some(target) = &landing.target {
            landing.duplicates.retain(|id| id != target);
        }
        Ok(landing)
    }

    /// The installations holding `token` (within `app` when given) that
    /// `remove` picks.
    async fn holders_of(
        &self,
        token: &str,
        app: Option<&str>,
        remove: impl Fn(&Object) -> bool,
    ) -> ParseResult<Vec<String>> {
        let mut filter = Filter::field("deviceToken", eq(token));
        if let Some(app) = app {
            filter = filter.and(Filter::field("appIdentifier", eq(app)));
        }
        let holders = self
            .find_all(Query::new(CLASS).filter(filter).limit(MAX_DUPLICATES))
            .await?;
        Ok(holders
            .iter()
            .filter(|o| remove(o))
            .filter_map(|o| o.get("objectId").and_then(Value::as_str).map(str::to_owned))
            .collect())
    }

    /// Deletes the duplicates a committed save left, as the master key.
    /// The save stands whatever happens here, as in Parse Server.
    pub(crate) async fn remove_duplicate_installations(&self, ids: &[String]) {
        let mut deletes = Vec::with_capacity(ids.len());
        for id in ids {
            match self.prepare_delete(&Auth::master(), CLASS, id).await {
                Ok(delete) => deletes.push(delete),
                Err(err) => tracing::warn!(%err, id, "cannot remove a duplicate installation"),
            }
        }
        if deletes.is_empty() {
            return;
        }
        match self.commit(deletes, false).await {
            Ok(replies) => {
                for reply in replies {
                    // One already gone is what was wanted.
                    if let Err(err) = reply
                        && !matches!(
                            err,
                            ParseError::Parse {
                                code: code::OBJECT_NOT_FOUND,
                                ..
                            }
                        )
                    {
                        tracing::warn!(%err, "cannot remove a duplicate installation");
                    }
                }
            }
            Err(err) => tracing::warn!(%err, "cannot remove duplicate installations"),
        }
    }
}

fn eq(value: &str) -> Condition {
    Condition::Eq(QueryValue::String(value.to_owned()))
}
