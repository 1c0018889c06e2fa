//! What identifies a session: its project and its session id, together.
//!
//! Contract (docs/events.md, "Sessions belong to their project"): events of one project
//! never change, move, count in or reveal a session of another project, even when they
//! carry the same `sessionId`. So everything that holds, deduplicates, stores, loads,
//! forwards, erases or marks a session does it by [`SessionIdentity`], never by the
//! session id alone. (Routing to a home partition may use the id alone: two projects'
//! sessions of one id then share a home, each still applied as its own session.)

use serde::{Deserialize, Serialize};

/// A session's identity: `(projectId, sessionId)`. Ordered by project, then session,
/// as the durable tables are keyed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionIdentity {
    pub project_id: u32,
    pub session_id: u64,
}

impl SessionIdentity {
    pub fn new(project_id: u32, session_id: u64) -> SessionIdentity {
        SessionIdentity {
            project_id,
            session_id,
        }
    }

    /// `(project_id, session_id)` as an SQL tuple literal: integers only, never text.
    pub fn sql_tuple(&self) -> String {
        format!("({}, {})", self.project_id, self.session_id)
    }
}

impl std::fmt::Display for SessionIdentity {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}/{}", self.project_id, self.session_id)
    }
}

/// Identities for an SQL `(project_id, session_id) IN (…)`: tuples of integers. Never
/// empty: an empty list is `(0, 0)`, a session no event can name.
pub fn identity_list(identities: impl IntoIterator<Item = SessionIdentity>) -> String {
    let list = identities
        .into_iter()
        .map(|identity| identity.sql_tuple())
        .collect::<Vec<_>>()
        .join(",");
    if list.is_empty() {
        "(0, 0)".to_owned()
    } else {
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_order_by_project_then_session_and_render_as_integer_tuples() {
        let mut identities = vec![
            SessionIdentity::new(2, 1),
            SessionIdentity::new(1, 9),
            SessionIdentity::new(1, 3),
        ];
        identities.sort();
        assert_eq!(identity_list(identities), "(1, 3),(1, 9),(2, 1)");
        assert_eq!(identity_list([]), "(0, 0)");
        assert_ne!(SessionIdentity::new(1, 7), SessionIdentity::new(2, 7));
    }
}
