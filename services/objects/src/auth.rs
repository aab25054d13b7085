//! The authority a read or write acts with: the master key, a signed-in
//! user with their roles, or nobody in particular.

use std::sync::Arc;

use crate::error::{ParseError, ParseResult, code};

/// The authority a request acts with.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// The master key (or the read-only master key): ACLs and class-level
    /// permissions do not apply.
    pub master: bool,
    /// The read-only master key: reads as the master key, writes nothing.
    pub read_only: bool,
    /// The maintenance key, which sets `master` too: past ACLs, and it
    /// also sees and sets internal fields, but no master-key-only route
    /// is open to it.
    pub maintenance: bool,
    pub installation_id: Option<String>,
    /// The request's `X-Parse-Request-Id`, for the events its writes make.
    pub request_id: Option<String>,
    /// The signed-in user, from a valid session token.
    pub user: Option<Arc<SessionUser>>,
}

/// The user behind a session token.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionUser {
    pub id: String,
    pub session_token: String,
    /// Signed in through `authData.anonymous`.
    pub anonymous: bool,
    /// `role:Name` of every role the user holds, directly or through roles
    /// of roles.
    pub roles: Vec<String>,
}

impl Auth {
    pub fn master() -> Self {
        Self {
            master: true,
            ..Self::default()
        }
    }

    /// Whether the request holds the master key (or its read-only twin)
    /// itself, as master-key-only routes need.
    pub fn has_master_key(&self) -> bool {
        self.master && !self.maintenance
    }

    /// For master-key-only routes.
    pub fn require_master(&self) -> ParseResult<()> {
        if self.has_master_key() {
            Ok(())
        } else {
            Err(ParseError::MasterKeyRequired)
        }
    }

    /// Refuses a write (`action` is Parse's word for it: create, update,
    /// delete...) to the read-only master key.
    pub fn require_writable(&self, action: &str) -> ParseResult<()> {
        if self.read_only {
            Err(ParseError::new(
                code::OPERATION_FORBIDDEN,
                format!("read-only masterKey isn't allowed to perform the {action} operation."),
            ))
        } else {
            Ok(())
        }
    }

    /// Who the request acts as in ACLs: `*`, the user's id and roles.
    pub fn principals(&self) -> Vec<String> {
        let mut out = vec!["*".to_owned()];
        if let Some(user) = &self.user {
            out.push(user.id.clone());
            out.extend(user.roles.iter().cloned());
        }
        out
    }

    pub fn user_id(&self) -> Option<&str> {
        self.user.as_ref().map(|u| u.id.as_str())
    }
}
