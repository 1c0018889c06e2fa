//! The statements of the events endpoint, pure: the session's status, the probe and
//! the window of one page (`super` runs them; its header says why a window gives the
//! page). Every value is bound with the client's `?` placeholders, in the order each
//! function's doc gives; the SQL text is assembled only from fixed fragments.

use sessions_shared::clickhouse::Query;

use crate::cursor::Position;

/// Where a window starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lower {
    /// At the session's first event.
    Start,
    /// After an event (the cursor's position: its `timestamp` and `event_index`).
    After(Position),
    /// After every event up to this `timestamp` (the end of the previous window).
    Beyond(i64),
}

impl Lower {
    /// The condition's SQL: empty, or ` AND …` with its placeholders.
    fn condition(&self) -> &'static str {
        match self {
            Lower::Start => "",
            // The first conjunct is a plain range of the primary key for 18.16's index
            // analysis; the second places the position exactly.
            Lower::After(_) => {
                " AND timestamp >= ? AND (timestamp > ? OR (timestamp = ? AND event_index > ?))"
            }
            Lower::Beyond(_) => " AND timestamp > ?",
        }
    }

    /// Binds the condition's values after what `query` already has.
    pub fn bind(&self, query: Query) -> Query {
        match *self {
            Lower::Start => query,
            Lower::After(after) => query
                .bind(after.start_ts)
                .bind(after.start_ts)
                .bind(after.start_ts)
                .bind(after.session_id),
            Lower::Beyond(timestamp) => query.bind(timestamp),
        }
    }
}

/// The session's state rows and deletion records. Binds: project, session, session,
/// project.
pub fn status_sql() -> &'static str {
    "SELECT \
     (SELECT count() FROM project_session_state WHERE project_id = ? AND session_id = ?) AS stored, \
     (SELECT count() FROM deleted_sessions WHERE session_id = ? AND project_id = ?) AS deleted"
}

/// The probe: `timestamp` of at most `?` events after `lower`, in storage order, by
/// one thread (so that `LIMIT` stops the read early). Binds: project, session,
/// `lower`'s values, the sample size.
pub fn probe_sql(lower: &Lower) -> String {
    format!(
        "SELECT timestamp FROM session_events WHERE project_id = ? AND session_id = ?{} \
         LIMIT ? SETTINGS max_threads = 1",
        lower.condition()
    )
}

/// One window: the first `?` distinct events after `lower`, up to a `timestamp`
/// (inclusive) when `upper`. Binds: project, session, `lower`'s values, the upper
/// bound if any, the count.
pub fn window_sql(lower: &Lower, upper: bool) -> String {
    format!(
        "SELECT timestamp, event_index, CAST(event_type AS Int8) AS event_type, url, referrer, \
         label, selector, name, message, payload FROM session_events \
         WHERE project_id = ? AND session_id = ?{}{} \
         ORDER BY timestamp, event_index LIMIT 1 BY timestamp, event_index LIMIT ?",
        lower.condition(),
        if upper { " AND timestamp <= ?" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_lower_bound_is_a_primary_key_range_then_the_exact_position() {
        let after = Lower::After(Position {
            start_ts: 5,
            session_id: 7,
        });
        assert_eq!(
            probe_sql(&Lower::Start),
            "SELECT timestamp FROM session_events WHERE project_id = ? AND session_id = ? \
             LIMIT ? SETTINGS max_threads = 1"
        );
        assert!(probe_sql(&after).contains(
            "session_id = ? AND timestamp >= ? AND (timestamp > ? OR (timestamp = ? AND event_index > ?)) LIMIT ?"
        ));
        assert!(probe_sql(&Lower::Beyond(3)).contains("session_id = ? AND timestamp > ? LIMIT ?"));
        let window = window_sql(&Lower::Beyond(3), true);
        assert!(
            window.contains("AND timestamp > ? AND timestamp <= ? ORDER BY timestamp, event_index")
        );
        assert!(window.ends_with("LIMIT 1 BY timestamp, event_index LIMIT ?"));
        assert!(!window_sql(&Lower::Start, false).contains("timestamp <= ?"));
    }

    #[test]
    fn placeholders_match_the_values_bound() {
        let placeholders = |sql: &str| sql.matches('?').count();
        let after = Lower::After(Position {
            start_ts: 1,
            session_id: 2,
        });
        // project, session, lower's values, then the sample size or the upper bound
        // and the count.
        for (lower, values) in [(Lower::Start, 0), (after, 4), (Lower::Beyond(9), 1)] {
            assert_eq!(placeholders(&probe_sql(&lower)), 2 + values + 1);
            assert_eq!(placeholders(&window_sql(&lower, true)), 2 + values + 2);
            assert_eq!(placeholders(&window_sql(&lower, false)), 2 + values + 1);
        }
        assert_eq!(placeholders(status_sql()), 4);
    }
}
