//! Regular expressions for backends that evaluate them in Rust, and for the
//! API's validation of `$regex`. The `regex` crate runs in linear time, so a
//! pattern cannot take exponential time; these limits bound its memory.

use regex::{Regex, RegexBuilder};

const SIZE_LIMIT: usize = 1 << 20;

/// Compiles a pattern (with inline flags) within the limits every backend
/// and the API share.
pub fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .size_limit(SIZE_LIMIT)
        .dfa_size_limit(SIZE_LIMIT)
        .build()
}
