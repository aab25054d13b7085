//! The API over real HTTP, on a real SQLite store.

mod common;

mod bad_input;
mod batch;
mod keys;
mod objects;
mod queries;
