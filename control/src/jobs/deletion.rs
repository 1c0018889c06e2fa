//! Erasing users' data from their projects: what `delete_user_data` jobs do, several
//! at once (a batch: the runner takes the deletions that are due together).
//!
//! Contract of [`Deletion::run`] (docs/api.md, "What a completed deletion
//! guarantees"): it returns, per user of the batch, Ok only when a read finds, in the
//! tables of the database, no row of the project under the user id and no row of any
//! session of the project listed in `deleted_sessions`, in the read model
//! (`sessions`, and its live copies in `live_sessions`) and the session events
//! (`session_events`), the worker's durable state (`project_session_state`, `session_keys`,
//! `project_session_applied`, and the tables keyed by session id alone that held it
//! before, `session_state` and `session_applied`) and the dead letters
//! (`rejected_events`, with their `dead_letter_subjects`): those whose parsed payload
//! names the user in its project (or in no valid project), or one of those sessions
//! (in their project or in none), matched exactly whatever escaping the producer used;
//! and those with no subject recorded (written before `dead_letter_subjects`, or not
//! JSON) whose stored text names the user, `"userId": "<id>"` as JSON writes it, or
//! one of those sessions, `"sessionId": <id>`. Steps, each idempotent, so a run that
//! stops anywhere is simply run again:
//!
//! 1. **Mark.** The users' live sessions (those the sessions endpoint shows) go to
//!    `deleted_sessions` (session id, project, time: nothing about the user), in one
//!    read and one INSERT per 100,000. From the moment a mark is readable, the ingest
//!    worker drops every event of that session before writing (ingest's
//!    `exactly_once`, step 8): deleted stays deleted.
//! 2. **Settle.** Wait `settle` after the marks, once for the batch: a worker flush
//!    that checked the marks just before they landed is written by then (its writes
//!    are bounded by its ClickHouse timeouts), so its rows exist before the mutations
//!    are created.
//! 3. **Erase.** One `ALTER TABLE … DELETE` per table whose condition covers every
//!    user of the batch still having rows (and two per chunk of named dead letters:
//!    the letters, then their subjects),
//!    then one wait until no mutation of the database is unfinished on any node
//!    (`sessions_shared::erasure`: on a cluster, `ON CLUSTER` on the shard-local
//!    tables, with marker rows first).
//! 4. **Verify.** Count what is left, per user: its rows, its project's deleted
//!    sessions' rows, and its dead letters (a dead letter found by text is not
//!    attributed to one user: any left keeps every user of the batch for another
//!    round). A user with
//!    nothing left is done, with the rounds it took; the others go through 3 again.
//!    The count also runs before the first round: users with no stored data (nothing
//!    marked, no row, no dead letter) issue no mutation.
//!
//! A session is its project and its id together (docs/events.md): rows of the worker's
//! state are matched by project as well as by a deleted session's id, so another
//! project's session of the same id is left as it is. The old tables keyed by session
//! id alone (`session_state`, `session_applied`) are no longer read by anything: there
//! every row of a deleted id goes.
//!
//! A batch is bounded (`super::batch`), so that no statement outgrows ClickHouse's
//! `max_query_size` (256 KiB). Values never enter the SQL as text: user ids are
//! written as `unhex('…')`, and so is the dead letters' pattern; projects are numbers,
//! session ids come from `deleted_sessions` by subquery, dead letters are named by a
//! hash of their key.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use sessions_shared::clickhouse::{id_list, Store, StoreError};
use sessions_shared::erasure::{mutate, wait_for_mutations, Count, LONG_REQUESTS};

use super::batch::{subjects_condition, users_condition, users_pattern, DeletedUser};

/// Rows of `deleted_sessions` per INSERT.
const MARK_CHUNK: usize = 100_000;
/// Dead letters named per mutation.
const DEAD_LETTER_CHUNK: usize = 10_000;
/// Rounds of erase-and-verify before the run gives up (transiently).
const MAX_ROUNDS: u32 = 5;
/// What a run did for one user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeletionReport {
    /// Sessions marked deleted by this run (0 when an earlier run marked them).
    pub sessions_marked: u64,
    /// Erase rounds before the user was found gone (0: nothing of the user was left
    /// to erase; no mutation was issued for it).
    pub rounds: u32,
}

#[derive(Row, Serialize)]
struct DeletedSession {
    session_id: u64,
    project_id: u32,
    deleted_at: u32,
}

#[derive(Row, Deserialize)]
struct UserSession {
    project_id: u32,
    user_hex: String,
    session_id: u64,
}

/// A `dead_letter_subjects` row naming a user of the batch.
#[derive(Row, Deserialize)]
struct NamedUser {
    letter: u64,
    project_id: u32,
    user_hex: String,
}

/// A dead letter to erase (by the hash of its message's key), and whose it is.
struct DeadLetter {
    letter: u64,
    of: Owner,
}

/// Whose a dead letter is, for the verification of step 4.
enum Owner {
    /// Names this user of the batch (by position), in its project or in none.
    User(usize),
    /// Names a deleted session of this project.
    Project(u32),
    /// Found by its stored text: every user of the batch waits for it.
    Batch,
}

#[derive(Row, Deserialize)]
struct UserCount {
    project_id: u32,
    user_hex: String,
    count: u64,
}

/// The deletion of a batch of users' data, each in its project.
pub struct Deletion<'a> {
    pub store: &'a Store,
    pub users: &'a [DeletedUser],
    /// Step 2's wait.
    pub settle: Duration,
    /// Counts every `ALTER … DELETE` issued, when given.
    pub mutations: Option<&'a prometheus::IntCounter>,
}

impl Deletion<'_> {
    /// Per user of the batch, in order: its report, or why it is not done (an error of
    /// the batch's statements, or rows that kept reappearing through every round).
    pub async fn run(&self) -> Vec<Result<DeletionReport, StoreError>> {
        let mut outcomes: Vec<Option<Result<DeletionReport, StoreError>>> =
            self.users.iter().map(|_| None).collect();
        if let Err(error) = self.rounds(&mut outcomes).await {
            for outcome in outcomes.iter_mut().filter(|outcome| outcome.is_none()) {
                *outcome = Some(Err(copy_error(&error)));
            }
        }
        outcomes
            .into_iter()
            .map(|outcome| {
                outcome.unwrap_or_else(|| {
                    Err(StoreError::Unavailable(format!(
                        "rows kept reappearing through {MAX_ROUNDS} rounds of deletion"
                    )))
                })
            })
            .collect()
    }

    /// Steps 1 to 4; a user found gone gets its outcome in `outcomes`.
    async fn rounds(
        &self,
        outcomes: &mut [Option<Result<DeletionReport, StoreError>>],
    ) -> Result<(), StoreError> {
        let marked = self.mark().await?;
        tokio::time::sleep(self.settle).await;
        // Verified before each round, so users with nothing stored cost reads only:
        // no mutation, which would rewrite parts of the shared tables on every node.
        for rounds in 0..=MAX_ROUNDS {
            let pending: Vec<usize> = (0..self.users.len())
                .filter(|&index| outcomes[index].is_none())
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            let users: Vec<&DeletedUser> =
                pending.iter().map(|&index| &self.users[index]).collect();
            let left = self.leftovers(&users).await?;
            let mut still = Vec::new();
            for (&index, left) in pending.iter().zip(left) {
                if left == 0 {
                    outcomes[index] = Some(Ok(DeletionReport {
                        sessions_marked: marked[index],
                        rounds,
                    }));
                } else {
                    still.push(&self.users[index]);
                }
            }
            if still.is_empty() || rounds == MAX_ROUNDS {
                return Ok(());
            }
            if rounds > 0 {
                tracing::info!(
                    users = still.len(),
                    rounds,
                    "rows written while the deletion ran; erasing again"
                );
            }
            self.erase(&still).await?;
            wait_for_mutations(self.store).await?;
        }
        Ok(())
    }

    /// Step 1: the users' live sessions into `deleted_sessions`; how many per user.
    async fn mark(&self) -> Result<Vec<u64>, StoreError> {
        let users: Vec<&DeletedUser> = self.users.iter().collect();
        let sql = format!(
            "SELECT project_id, hex(user_id) AS user_hex, session_id FROM \
             (SELECT project_id, user_id, session_id, argMax(deleted, version) AS gone \
              FROM sessions WHERE {} GROUP BY project_id, user_id, session_id) \
             WHERE gone = 0",
            users_condition(&users)
        );
        let sessions: Vec<UserSession> = self
            .store
            .run_for(self.store.timeout() * LONG_REQUESTS, |client| {
                self.store
                    .read_your_writes(client.query(&sql))
                    .fetch_all::<UserSession>()
            })
            .await?;
        let index = self.index_by_hex();
        let mut marked = vec![0; self.users.len()];
        for session in &sessions {
            if let Some(&user) =
                index.get(&(session.project_id, session.user_hex.to_ascii_lowercase()))
            {
                marked[user] += 1;
            }
        }
        let deleted_at = sessions_shared::clock::epoch_seconds();
        for chunk in sessions.chunks(MARK_CHUNK) {
            self.store
                .run_for(self.store.timeout() * 4, |client| {
                    let client = client.clone();
                    async move {
                        let mut insert =
                            client.insert::<DeletedSession>("deleted_sessions").await?;
                        for session in chunk {
                            let row = DeletedSession {
                                session_id: session.session_id,
                                project_id: session.project_id,
                                deleted_at,
                            };
                            insert.write(&row).await?;
                        }
                        insert.end().await
                    }
                })
                .await?;
        }
        Ok(marked)
    }

    /// Each user's position in the batch, by project and lowercase hex of its id.
    fn index_by_hex(&self) -> HashMap<(u32, String), usize> {
        self.users
            .iter()
            .enumerate()
            .map(|(index, user)| ((user.project_id, hex::encode(&user.user_id)), index))
            .collect()
    }

    /// `subject IN` the deleted sessions of `projects`. A query through
    /// `Distributed` tables says `GLOBAL IN` (the set is read once and sent to every
    /// shard); a mutation runs on each node's own table and reads the set itself.
    fn deleted_ids(&self, subject: &str, in_operator: &str, projects: &BTreeSet<u32>) -> String {
        format!(
            "{subject} {in_operator} (SELECT session_id FROM {}.deleted_sessions WHERE project_id IN ({}))",
            self.store.database(),
            id_list(projects.iter().map(|&project| u64::from(project)))
        )
    }

    /// Rows of the projects' deleted sessions, per table, for a query (`GLOBAL IN`)
    /// or a mutation (`IN`). A session is its project and its id: in every table that
    /// has the project, each project's rows are matched against its own deleted
    /// sessions, so another project's session of the same id is left alone; the old
    /// tables keyed by session id alone (no longer read) lose every row of those ids.
    fn deleted_conditions(
        &self,
        in_operator: &str,
        projects: &BTreeSet<u32>,
    ) -> [(&'static str, String); 8] {
        let per_project = projects
            .iter()
            .map(|&project| {
                format!(
                    "(project_id = {project} AND {})",
                    self.deleted_ids("session_id", in_operator, &BTreeSet::from([project]))
                )
            })
            .collect::<Vec<_>>()
            .join(" OR ");
        let deleted = self.deleted_ids("session_id", in_operator, projects);
        [
            ("sessions", per_project.clone()),
            ("live_sessions", per_project.clone()),
            ("session_keys", per_project.clone()),
            ("project_session_state", per_project.clone()),
            ("project_session_applied", per_project.clone()),
            ("session_events", per_project),
            ("session_state", deleted.clone()),
            ("session_applied", deleted),
        ]
    }

    /// The dead letters naming one of `users` or a deleted session of their projects,
    /// each with whose it is: by their subjects (`dead_letter_subjects`, exact), or, for
    /// those with no subject recorded (written before that table, or not JSON), by
    /// their stored text.
    async fn dead_letters(&self, users: &[&DeletedUser]) -> Result<Vec<DeadLetter>, StoreError> {
        let mut found = Vec::new();
        let sql = format!(
            "SELECT DISTINCT cityHash64(topic, `partition`, `offset`) AS letter, project_id, \
             hex(user_id) AS user_hex FROM dead_letter_subjects WHERE {}",
            subjects_condition(users)
        );
        for named in self.read::<NamedUser>(&sql).await? {
            let user_hex = named.user_hex.to_ascii_lowercase();
            for (index, user) in users.iter().enumerate() {
                if (named.project_id == 0 || named.project_id == user.project_id)
                    && hex::encode(&user.user_id) == user_hex
                {
                    found.push(DeadLetter {
                        letter: named.letter,
                        of: Owner::User(index),
                    });
                }
            }
        }
        let projects: BTreeSet<u32> = users.iter().map(|user| user.project_id).collect();
        for &project in &projects {
            let sql = format!(
                "SELECT DISTINCT cityHash64(topic, `partition`, `offset`) FROM dead_letter_subjects \
                 WHERE project_id IN (0, {project}) AND session_id != 0 AND {}",
                self.deleted_ids("session_id", "GLOBAL IN", &BTreeSet::from([project]))
            );
            for letter in self.read::<u64>(&sql).await? {
                found.push(DeadLetter {
                    letter,
                    of: Owner::Project(project),
                });
            }
        }
        let sql = format!(
            "SELECT DISTINCT cityHash64(topic, `partition`, `offset`) FROM rejected_events \
             ARRAY JOIN arrayConcat(extractAll(payload, '\"sessionId\"\\\\s*:\\\\s*\"??([0-9]+)'), ['']) AS named \
             WHERE (match(payload, unhex('{}')) OR {}) \
             AND (topic, `partition`, `offset`, element) GLOBAL NOT IN \
             (SELECT topic, `partition`, `offset`, element FROM dead_letter_subjects)",
            hex::encode(users_pattern(users)),
            self.deleted_ids("toUInt64OrZero(named)", "GLOBAL IN", &projects)
        );
        for letter in self.read::<u64>(&sql).await? {
            found.push(DeadLetter {
                letter,
                of: Owner::Batch,
            });
        }
        Ok(found)
    }

    /// Step 3 for `users`: one mutation per table, and one per chunk of named dead
    /// letters.
    async fn erase(&self, users: &[&DeletedUser]) -> Result<(), StoreError> {
        let projects: BTreeSet<u32> = users.iter().map(|user| user.project_id).collect();
        let of_users = users_condition(users);
        for (table, deleted) in self.deleted_conditions("IN", &projects) {
            let condition = match table {
                "sessions" | "live_sessions" | "session_keys" => {
                    format!("({of_users}) OR {deleted}")
                }
                _ => deleted,
            };
            self.mutate(table, &condition).await?;
        }
        let letters: BTreeSet<u64> = self
            .dead_letters(users)
            .await?
            .into_iter()
            .map(|found| found.letter)
            .collect();
        let letters: Vec<u64> = letters.into_iter().collect();
        for chunk in letters.chunks(DEAD_LETTER_CHUNK) {
            let condition = format!(
                "cityHash64(topic, `partition`, `offset`) IN ({})",
                id_list(chunk.iter().copied())
            );
            // The dead letters before their subjects: a dead letter left by a failed
            // round is still found by its subjects in the next.
            self.mutate("rejected_events", &condition).await?;
            self.mutate("dead_letter_subjects", &condition).await?;
        }
        Ok(())
    }

    async fn mutate(&self, table: &str, condition: &str) -> Result<(), StoreError> {
        mutate(self.store, table, condition).await?;
        if let Some(mutations) = self.mutations {
            mutations.inc();
        }
        Ok(())
    }

    /// Step 4: per user of `users`, in order, the rows the deletion must not leave:
    /// its own (tables keyed by user), its project's deleted sessions' (every table),
    /// and the dead letters that are its (by subject, of its project's deleted
    /// sessions, or found by text, which counts for every user of the batch).
    pub async fn leftovers(&self, users: &[&DeletedUser]) -> Result<Vec<u64>, StoreError> {
        let mut left: HashMap<(u32, String), u64> = HashMap::new();
        let of_users = users_condition(users);
        for table in ["sessions", "live_sessions", "session_keys"] {
            let sql = format!(
                "SELECT project_id, hex(user_id) AS user_hex, count() AS count FROM {table} \
                 WHERE {of_users} GROUP BY project_id, user_hex"
            );
            let counts: Vec<UserCount> = self.read_of(table, &sql).await?;
            for count in counts {
                *left
                    .entry((count.project_id, count.user_hex.to_ascii_lowercase()))
                    .or_default() += count.count;
            }
        }
        let projects: BTreeSet<u32> = users.iter().map(|user| user.project_id).collect();
        let mut of_project: HashMap<u32, u64> = HashMap::new();
        for &project in &projects {
            for (table, condition) in
                self.deleted_conditions("GLOBAL IN", &BTreeSet::from([project]))
            {
                let sql = format!("SELECT count() AS count FROM {table} WHERE {condition}");
                let found: Vec<Count> = self.read_of(table, &sql).await?;
                *of_project.entry(project).or_default() +=
                    found.iter().map(|found| found.count).sum::<u64>();
            }
        }
        let dead_letters = self.dead_letters(users).await?;
        Ok(users
            .iter()
            .enumerate()
            .map(|(index, user)| {
                let letters = dead_letters
                    .iter()
                    .filter(|found| match found.of {
                        Owner::User(owner) => owner == index,
                        Owner::Project(project) => project == user.project_id,
                        Owner::Batch => true,
                    })
                    .count() as u64;
                left.get(&(user.project_id, hex::encode(&user.user_id)))
                    .copied()
                    .unwrap_or(0)
                    + of_project.get(&user.project_id).copied().unwrap_or(0)
                    + letters
            })
            .collect())
    }

    /// [`Deletion::read`] of `table`; of `live_sessions` a plain read. The workers
    /// drop its old day partitions, and on a cluster of 18.16 a partition dropped
    /// after a quorum write makes every sequentially consistent read of the table fail
    /// ("replica doesn't have part …", measured); a plain read is enough here: the
    /// mutations are done on every node by then (`wait_for_mutations`), so a replica
    /// holds no row of a deleted session in any part, fetched yet or not.
    async fn read_of<T>(&self, table: &str, sql: &str) -> Result<Vec<T>, StoreError>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        if table != "live_sessions" {
            return self.read(sql).await;
        }
        self.store
            .run_for(self.store.timeout() * LONG_REQUESTS, |client| {
                client.query(sql).fetch_all::<T>()
            })
            .await
    }

    async fn read<T>(&self, sql: &str) -> Result<Vec<T>, StoreError>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        self.store
            .run_for(self.store.timeout() * LONG_REQUESTS, |client| {
                self.store
                    .read_your_writes(client.query(sql))
                    .fetch_all::<T>()
            })
            .await
    }
}

/// The same error again, for each user a batch-wide failure leaves undone.
fn copy_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::Timeout(after) => StoreError::Timeout(*after),
        StoreError::Unavailable(why) => StoreError::Unavailable(why.clone()),
        StoreError::Rejected { code, message } => StoreError::Rejected {
            code: *code,
            message: message.clone(),
        },
        StoreError::Malformed(why) => StoreError::Malformed(why.clone()),
    }
}
