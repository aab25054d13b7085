//! The API over real HTTP, on a real SQLite store.

mod common;

mod accounts;
mod acl;
mod auth_code_providers;
mod auth_data;
mod auth_gcenter;
mod auth_ldap;
mod auth_providers;
mod bad_input;
mod batch;
mod config;
mod dashboard;
mod email;
mod files;
mod installations;
mod keys;
mod mfa;
mod objects;
mod queries;
mod schemas;
mod users;
