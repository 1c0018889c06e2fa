//! Erasing one user's data from a project: what a `delete_user_data` job does.
//!
//! Contract of [`Deletion::run`] (docs/api.md, "What a completed deletion
//! guarantees"): it returns Ok only when a read finds, in the tables of the database,
//! no row of the project under the user id and no row of any session of the project
//! listed in `deleted_sessions`, in the read model (`sessions`), the worker's durable
//! state (`session_state`, `session_keys`, `session_applied`) and the dead letters
//! (`rejected_events` whose payload names the user, `"userId": "<id>"` in JSON, or one
//! of those sessions, `"sessionId": <id>`). Steps, each idempotent, so a run that stops
//! anywhere is simply run again:
//!
//! 1. **Mark.** The user's live sessions (those the sessions endpoint shows) go to
//!    `deleted_sessions` (session id, project, time: nothing about the user). From the
//!    moment a mark is readable, the ingest worker drops every event of that session
//!    before writing (ingest's `exactly_once`, step 8): deleted stays deleted.
//! 2. **Settle.** Wait `settle` after the marks: a worker flush that checked the marks
//!    just before they landed is written by then (its writes are bounded by its
//!    ClickHouse timeouts), so its rows exist before the mutations are created.
//! 3. **Erase.** `ALTER TABLE … DELETE` mutations, then wait until no mutation of the
//!    database is unfinished on any node (`sessions_shared::erasure`: on a cluster,
//!    `ON CLUSTER` on the shard-local tables, with marker rows first).
//! 4. **Verify.** Count what is left; anything left (a write that raced the mutations)
//!    means another round of 3. The count also runs before the first round: a user
//!    with no stored data (nothing marked, no row, no dead letter) issues no mutation.
//!
//! Values never enter the SQL as text: the user id is written as `unhex('…')`, session
//! ids come from `deleted_sessions` by subquery, dead letters are named by a hash of
//! their key.

use std::time::Duration;

use clickhouse::Row;
use serde::Serialize;
use sessions_shared::clickhouse::{id_list, Store, StoreError};
use sessions_shared::erasure::{mutate, wait_for_mutations, Count, LONG_REQUESTS};

/// Rows of `deleted_sessions` per INSERT.
const MARK_CHUNK: usize = 100_000;
/// Dead letters named per mutation.
const DEAD_LETTER_CHUNK: usize = 10_000;
/// Rounds of erase-and-verify before the run gives up (transiently).
const MAX_ROUNDS: u32 = 5;

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeletionReport {
    /// Sessions marked deleted by this run (0 when an earlier run marked them).
    pub sessions_marked: u64,
    /// Erase rounds (0: there was nothing to erase, no mutation was issued).
    pub rounds: u32,
}

#[derive(Row, Serialize)]
struct DeletedSession {
    session_id: u64,
    project_id: u32,
    deleted_at: u32,
}

/// The deletion of one user's data in one project.
pub struct Deletion<'a> {
    pub store: &'a Store,
    pub project_id: u32,
    pub user_id: &'a str,
    /// Step 2's wait.
    pub settle: Duration,
}

impl Deletion<'_> {
    pub async fn run(&self) -> Result<DeletionReport, StoreError> {
        let sessions_marked = self.mark().await?;
        tokio::time::sleep(self.settle).await;
        // Verified before each round, so a user with nothing stored costs reads only:
        // no mutation, which would rewrite parts of the shared tables on every node.
        for rounds in 0..=MAX_ROUNDS {
            let left = self.leftovers().await?;
            if left == 0 {
                return Ok(DeletionReport {
                    sessions_marked,
                    rounds,
                });
            }
            if rounds == MAX_ROUNDS {
                break;
            }
            if rounds > 0 {
                tracing::info!(
                    left,
                    rounds,
                    "rows written while the deletion ran; erasing again"
                );
            }
            self.erase().await?;
            wait_for_mutations(self.store).await?;
        }
        Err(StoreError::Unavailable(format!(
            "rows kept reappearing through {MAX_ROUNDS} rounds of deletion"
        )))
    }

    /// Step 1: the user's live sessions into `deleted_sessions`.
    async fn mark(&self) -> Result<u64, StoreError> {
        let sql = "SELECT session_id FROM (SELECT session_id, argMax(deleted, version) AS gone \
                   FROM sessions WHERE project_id = ? AND user_id = ? GROUP BY session_id) \
                   WHERE gone = 0";
        let ids: Vec<u64> = self
            .store
            .run_for(self.store.timeout() * LONG_REQUESTS, |client| {
                self.store
                    .read_your_writes(client.query(sql))
                    .bind(self.project_id)
                    .bind(self.user_id)
                    .fetch_all::<u64>()
            })
            .await?;
        let deleted_at = sessions_shared::clock::epoch_seconds();
        for chunk in ids.chunks(MARK_CHUNK) {
            self.store
                .run_for(self.store.timeout() * 4, |client| {
                    let client = client.clone();
                    async move {
                        let mut insert =
                            client.insert::<DeletedSession>("deleted_sessions").await?;
                        for &session_id in chunk {
                            let row = DeletedSession {
                                session_id,
                                project_id: self.project_id,
                                deleted_at,
                            };
                            insert.write(&row).await?;
                        }
                        insert.end().await
                    }
                })
                .await?;
        }
        Ok(ids.len() as u64)
    }

    /// `session_id IN` the project's deleted sessions. A query through `Distributed`
    /// tables says `GLOBAL IN` (the set is read once and sent to every shard); a
    /// mutation runs on each node's own table and reads the set itself.
    fn deleted_ids(&self, in_operator: &str) -> String {
        format!(
            "session_id {in_operator} (SELECT session_id FROM {}.deleted_sessions WHERE project_id = {})",
            self.store.database(),
            self.project_id
        )
    }

    /// Rows of the user, or of a deleted session, per table (`user_id`: tables keyed by
    /// user too), for a query (`GLOBAL IN`) or a mutation (`IN`).
    fn conditions(&self, in_operator: &str) -> [(&'static str, String); 4] {
        let user = format!(
            "project_id = {} AND user_id = unhex('{}')",
            self.project_id,
            hex::encode(self.user_id)
        );
        let deleted = self.deleted_ids(in_operator);
        [
            (
                "sessions",
                format!(
                    "({user}) OR (project_id = {} AND {deleted})",
                    self.project_id
                ),
            ),
            ("session_keys", format!("({user}) OR {deleted}")),
            ("session_state", deleted.clone()),
            ("session_applied", deleted),
        ]
    }

    /// The regular expression of a dead letter that names the user.
    fn user_pattern(&self) -> String {
        let quoted = serde_json::to_string(self.user_id).expect("a string serializes");
        format!(r#""userId"\s*:\s*{}"#, regex_escape(&quoted))
    }

    /// Keys (hashed) of the dead letters naming the user or a deleted session.
    async fn dead_letters(&self) -> Result<Vec<u64>, StoreError> {
        let sql = format!(
            "SELECT DISTINCT cityHash64(topic, `partition`, `offset`) FROM rejected_events \
             ARRAY JOIN arrayConcat(extractAll(payload, '\"sessionId\"\\\\s*:\\\\s*\"??([0-9]+)'), ['']) AS named \
             WHERE match(payload, ?) OR toUInt64OrZero(named) GLOBAL IN \
             (SELECT session_id FROM {}.deleted_sessions WHERE project_id = ?)",
            self.store.database()
        );
        let pattern = self.user_pattern();
        self.store
            .run_for(self.store.timeout() * LONG_REQUESTS, |client| {
                self.store
                    .read_your_writes(client.query(&sql))
                    .bind(pattern.as_str())
                    .bind(self.project_id)
                    .fetch_all::<u64>()
            })
            .await
    }

    /// Step 3: one mutation per table, and one per chunk of named dead letters.
    async fn erase(&self) -> Result<(), StoreError> {
        for (table, condition) in self.conditions("IN") {
            mutate(self.store, table, &condition).await?;
        }
        for chunk in self.dead_letters().await?.chunks(DEAD_LETTER_CHUNK) {
            let condition = format!(
                "cityHash64(topic, `partition`, `offset`) IN ({})",
                id_list(chunk.iter().copied())
            );
            mutate(self.store, "rejected_events", &condition).await?;
        }
        Ok(())
    }

    /// Step 4: rows the deletion must not leave, in all tables.
    pub async fn leftovers(&self) -> Result<u64, StoreError> {
        let mut left = 0;
        for (table, condition) in self.conditions("GLOBAL IN") {
            let sql = format!("SELECT count() AS count FROM {table} WHERE {condition}");
            let found: Count = self
                .store
                .run_for(self.store.timeout() * LONG_REQUESTS, |client| {
                    self.store.read_your_writes(client.query(&sql)).fetch_one()
                })
                .await?;
            left += found.count;
        }
        Ok(left + self.dead_letters().await?.len() as u64)
    }
}

/// `text` with every character a regular expression gives a meaning to escaped.
fn regex_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_id_is_matched_literally_in_its_json_form() {
        assert_eq!(regex_escape(r#""a.b*c""#), r#""a\.b\*c""#);
        assert_eq!(regex_escape(r#""x\"y""#), r#""x\\"y""#);
    }
}
