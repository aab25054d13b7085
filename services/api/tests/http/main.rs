//! The API over real HTTP, on a real SQLite store.

mod common;

mod acl;
mod bad_input;
mod batch;
mod keys;
mod objects;
mod queries;
mod users;
