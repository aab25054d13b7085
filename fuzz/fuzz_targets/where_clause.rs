//! A client's query: the bytes as JSON, parsed both as a `where` and as a
//! find's whole parameters; each filter that parses is evaluated in memory
//! (as LiveQuery does) against the seeded objects, and run as a find on
//! SQLite, with and without the master key.

#![no_main]

use libfuzzer_sys::fuzz_target;
use oxbase_fuzz::{CLASS, Harness};
use oxbase_objects::query::WhereParser;
use oxbase_objects::{Auth, FindOptions};
use oxbase_store::{Filter, Matcher, Query};
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let harness = Harness::get();
    harness.run(check(harness, value));
});

async fn check(harness: &'static Harness, value: Value) {
    let limits = &harness.limits;
    if let Ok(filter) = WhereParser::new(limits).parse(&value) {
        match_samples(harness, &filter).await;
        let mut options =
            FindOptions::for_find(&Map::new(), limits).expect("empty parameters parse");
        options.filter = filter;
        let _ = harness.layer.find(&Auth::master(), CLASS, &options).await;
    }
    if let Value::Object(params) = &value
        && let Ok(options) = FindOptions::for_find(params, limits)
    {
        match_samples(harness, &options.filter).await;
        // Without the master key, the layer adds the ACL's conditions.
        let _ = harness.layer.find(&Auth::default(), CLASS, &options).await;
    }
}

/// Evaluates `filter` against each seeded object, answering the lookups it
/// asks for (subqueries, relations) from the store, as LiveQuery does.
async fn match_samples(harness: &Harness, filter: &Filter) {
    let Ok(matcher) = Matcher::new(filter) else {
        return;
    };
    for sample in &harness.samples {
        let mut answers = Vec::new();
        for (class_name, lookup) in matcher.lookups(CLASS, sample) {
            let query = Query::new(class_name).filter(lookup).limit(1);
            let found = harness.layer.find_raw(&query).await;
            answers.push(found.is_ok_and(|objects| !objects.is_empty()));
        }
        matcher.matches(sample, &answers);
    }
}
