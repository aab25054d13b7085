//! The object layer's settings: `[limits]`, the bounds that keep one
//! request from hurting the others.

use oxbase_kit::Section;
use serde::{Deserialize, Serialize};

/// Limits that keep one request from hurting the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Most operations in one `/batch` request.
    pub max_batch_size: usize,
    /// Deepest nesting of `$or`/`$and`/`$nor` and subqueries in one query.
    pub max_query_depth: usize,
    /// Longest accepted `$regex` pattern, in bytes.
    pub max_regex_length: usize,
    /// Deepest `include` path (`a.b.c` is 3).
    pub max_include_depth: usize,
    /// Largest `limit` a query may ask for; larger values are lowered to it,
    /// as Parse Server's `maxLimit` does. 0 (the default, as in Parse
    /// Server) means no cap.
    pub max_limit: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 20 * 1024 * 1024,
            max_batch_size: 50,
            max_query_depth: 10,
            max_regex_length: 1024,
            max_include_depth: 10,
            max_limit: 0,
        }
    }
}

impl Section for Limits {
    const KEY: &'static str = "limits";

    fn validate(&self) -> Result<(), String> {
        if self.max_batch_size == 0 || self.max_body_bytes == 0 {
            return Err("max_batch_size and max_body_bytes must be positive".into());
        }
        Ok(())
    }
}
