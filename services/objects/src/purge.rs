//! Purging a class, as Parse Dashboard's "Delete all rows" does: every
//! object goes and the schema stays.

use oxbase_store::Query;
use serde_json::Value;

use crate::ObjectLayer;
use crate::auth::Auth;
use crate::error::{ParseError, ParseResult};
use crate::users::WriteEffect;

/// Objects deleted per write.
const PURGE_PAGE: usize = 500;

impl ObjectLayer {
    /// Deletes every object of `class_name`. Each object is deleted as a
    /// write of its own, so each leaves its delete event (marked as a
    /// purge, so no afterDelete runs, as in Parse Server); a class that
    /// does not exist has nothing to delete.
    pub async fn purge(&self, auth: &Auth, class_name: &str) -> ParseResult<()> {
        let mut purged = 0usize;
        loop {
            let mut query = Query::new(class_name).limit(PURGE_PAGE);
            query.keys = Some(Vec::new());
            let page = self.find_all(query).await?;
            if page.is_empty() {
                break;
            }
            let mut deletes = Vec::with_capacity(page.len());
            for object in &page {
                if let Some(id) = object.get("objectId").and_then(Value::as_str) {
                    let mut delete = self.prepare_delete(auth, class_name, id).await?;
                    delete.mark_purge();
                    deletes.push(delete);
                }
            }
            let effects: Vec<WriteEffect> = deletes.iter().map(WriteEffect::of).collect();
            let replies = self.commit(deletes, false).await?;
            // A page that deletes nothing would come back forever.
            if replies.iter().all(Result::is_err) {
                return Err(ParseError::internal("purge deleted no object of a page"));
            }
            purged += replies.iter().filter(|r| r.is_ok()).count();
            self.after_writes(&effects).await;
        }
        tracing::info!(class = %class_name, purged, "purged a class");
        Ok(())
    }
}
