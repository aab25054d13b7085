//! What a push reads and writes: its `_PushStatus`, and the installations
//! it reaches (found with a Parse query, updated for badges and dead
//! tokens). The API opens the status; the push service does the rest.

use serde_json::{Map, Value};

use crate::ObjectLayer;
use crate::auth::Auth;
use crate::error::{ParseError, ParseResult, code};
use crate::installations::CLASS as INSTALLATION;
use crate::query::FindOptions;

const STATUS: &str = "_PushStatus";

impl ObjectLayer {
    /// Applies `changes` to a `_PushStatus`; the status as it now is.
    pub async fn update_push_status(
        &self,
        id: &str,
        changes: &Map<String, Value>,
    ) -> ParseResult<Map<String, Value>> {
        let master = Auth::master();
        let write = self.prepare_update(&master, STATUS, id, changes).await?;
        self.commit_one(write).await?;
        let options = FindOptions::for_get(&Map::new(), self.limits())?;
        self.get(&master, STATUS, id, &options).await
    }

    /// The `_Installation` objects a Parse find with `params` returns, as
    /// the master key sees them.
    pub async fn find_installations(
        &self,
        params: &Map<String, Value>,
    ) -> ParseResult<Vec<Map<String, Value>>> {
        let options = FindOptions::for_find(params, self.limits())?;
        let (found, _) = self.find(&Auth::master(), INSTALLATION, &options).await?;
        Ok(found)
    }

    /// Applies the same update to each installation in `ids`; one deleted
    /// meanwhile is skipped.
    pub async fn update_installations(
        &self,
        ids: &[String],
        change: &Map<String, Value>,
    ) -> ParseResult<()> {
        let mut writes = Vec::with_capacity(ids.len());
        for id in ids {
            writes.push(
                self.prepare_update(&Auth::master(), INSTALLATION, id, change)
                    .await?,
            );
        }
        for reply in self.commit(writes, false).await? {
            match reply {
                Err(ParseError::Parse {
                    code: code::OBJECT_NOT_FOUND,
                    ..
                }) => {}
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }
}
