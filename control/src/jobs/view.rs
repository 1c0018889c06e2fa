//! What a job is, from the rows of its log (pure, no I/O).
//!
//! Contract: a job is stored as an append-only log of rows in `jobs`, each the whole
//! job as one change left it (scheduled, claimed, lease renewed, cancelled, completed,
//! failed). [`Job::from_rows`] folds the rows of one job into what the API shows:
//! - the **first terminal row** (completed, failed or cancelled; earliest `updated_at`,
//!   ties by runner then status) decides the outcome for good: a second runner that
//!   finishes the same job later cannot change it, so every job has one outcome;
//! - until then, the latest row of the latest claim (attempt, then time) is the job;
//! - `updatedAt` is `null` while only the scheduling row exists.
//!
//! Rows may arrive in any order and repeat (a retried insert): the fold is
//! order-free and idempotent.

use serde::{Deserialize, Serialize};

/// The only action today.
pub const DELETE_USER_DATA: &str = "delete_user_data";

/// A job's status, as the API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JobStatus {
    Scheduled,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Scheduled => "scheduled",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<JobStatus> {
        Some(match text {
            "scheduled" => JobStatus::Scheduled,
            "running" => JobStatus::Running,
            "completed" => JobStatus::Completed,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            _ => return None,
        })
    }

    /// Completed, failed and cancelled jobs never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// One row of the `jobs` log.
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct JobRow {
    pub job_id: u64,
    pub project_id: u32,
    pub action: String,
    pub reference_id: String,
    pub description: String,
    pub status: String,
    pub created_at: i64,
    pub start_at: i64,
    /// Epoch ms of this change; 0 on the scheduling row.
    pub updated_at: i64,
    /// Empty: no error.
    pub errors: String,
    pub runner: String,
    pub attempt: u32,
    pub lease_until: i64,
}

impl JobRow {
    /// The same job after a change made at `now_ms` by `runner`.
    pub fn changed(&self, status: JobStatus, now_ms: i64, runner: &str) -> JobRow {
        JobRow {
            status: status.as_str().to_owned(),
            updated_at: now_ms.max(1),
            runner: runner.to_owned(),
            ..self.clone()
        }
    }

    fn status(&self) -> JobStatus {
        // An unknown status (a newer version's) is shown as running: never terminal,
        // so it cannot decide an outcome this version does not understand.
        JobStatus::parse(&self.status).unwrap_or(JobStatus::Running)
    }
}

/// A job as the API shows it, plus what the runner needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub job_id: u64,
    pub project_id: u32,
    pub action: String,
    pub reference_id: String,
    pub description: String,
    pub status: JobStatus,
    pub created_at: i64,
    pub start_at: i64,
    pub updated_at: Option<i64>,
    pub errors: Option<String>,
    /// The row the job is now: the base of the next change.
    pub latest: JobRow,
}

impl Job {
    /// The job of `rows` (all of one job, any order); `None` for no rows.
    pub fn from_rows(rows: &[JobRow]) -> Option<Job> {
        let deciding = rows
            .iter()
            .filter(|row| row.status().is_terminal())
            .min_by(|a, b| {
                // Every field that can differ between a job's rows: a total order, so
                // that the deciding row never depends on the order rows are read in.
                (
                    a.updated_at,
                    &a.runner,
                    &a.status,
                    a.attempt,
                    &a.errors,
                    a.lease_until,
                )
                    .cmp(&(
                        b.updated_at,
                        &b.runner,
                        &b.status,
                        b.attempt,
                        &b.errors,
                        b.lease_until,
                    ))
            })
            .or_else(|| {
                rows.iter().max_by(|a, b| {
                    (
                        a.attempt,
                        a.updated_at,
                        a.status(),
                        &a.runner,
                        a.lease_until,
                        &a.errors,
                    )
                        .cmp(&(
                            b.attempt,
                            b.updated_at,
                            b.status(),
                            &b.runner,
                            b.lease_until,
                            &b.errors,
                        ))
                })
            })?;
        Some(Job {
            job_id: deciding.job_id,
            project_id: deciding.project_id,
            action: deciding.action.clone(),
            reference_id: deciding.reference_id.clone(),
            description: deciding.description.clone(),
            status: deciding.status(),
            created_at: deciding.created_at,
            start_at: deciding.start_at,
            updated_at: (deciding.updated_at > 0).then_some(deciding.updated_at),
            errors: (!deciding.errors.is_empty()).then(|| deciding.errors.clone()),
            latest: deciding.clone(),
        })
    }

    /// Every job of `rows` (rows of many jobs), newest first (`createdAt`, then id).
    pub fn all_from_rows(mut rows: Vec<JobRow>) -> Vec<Job> {
        rows.sort_by_key(|row| row.job_id);
        let mut jobs: Vec<Job> = rows
            .chunk_by(|a, b| a.job_id == b.job_id)
            .filter_map(Job::from_rows)
            .collect();
        jobs.sort_by_key(|job| std::cmp::Reverse((job.created_at, job.job_id)));
        jobs
    }

    /// The runner whose claim of `attempt` counts: the earliest claim of that attempt
    /// (ties by runner id). Every runner that sees the same claims picks the same one;
    /// a runner whose claim landed first wins even before it sees a later one.
    pub fn claim_winner(rows: &[JobRow], attempt: u32) -> Option<&str> {
        rows.iter()
            .filter(|row| row.attempt == attempt && row.status() == JobStatus::Running)
            .min_by(|a, b| (a.updated_at, &a.runner).cmp(&(b.updated_at, &b.runner)))
            .map(|row| row.runner.as_str())
    }

    /// Whether a client may still cancel it at `now_ms`: scheduled, grace not over.
    pub fn is_cancellable(&self, now_ms: i64) -> bool {
        self.status == JobStatus::Scheduled && now_ms < self.start_at
    }

    /// Whether a runner may take it at `now_ms`: a scheduled job once its start (plus
    /// `start_delay` when it could be cancelled, so that a cancellation that began
    /// before the start has landed), or a running job whose lease has lapsed.
    pub fn is_due(&self, now_ms: i64, start_delay_ms: i64) -> bool {
        match self.status {
            JobStatus::Scheduled if self.start_at > self.created_at => {
                now_ms >= self.start_at.saturating_add(start_delay_ms)
            }
            JobStatus::Scheduled => now_ms >= self.start_at,
            JobStatus::Running => now_ms >= self.latest.lease_until,
            _ => false,
        }
    }

    /// The API's job object (serializes with the contract's keys, in its order).
    pub fn api(&self) -> JobJson<'_> {
        JobJson {
            job_id: self.job_id,
            description: &self.description,
            status: self.status.as_str(),
            project_id: self.project_id,
            action: &self.action,
            reference_id: &self.reference_id,
            created_at: self.created_at,
            updated_at: self.updated_at,
            start_at: self.start_at,
            errors: self.errors.as_deref(),
        }
    }
}

/// The contract's job object (field order is the contract's).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobJson<'a> {
    pub job_id: u64,
    pub description: &'a str,
    pub status: &'static str,
    pub project_id: u32,
    pub action: &'a str,
    pub reference_id: &'a str,
    pub created_at: i64,
    pub updated_at: Option<i64>,
    pub start_at: i64,
    pub errors: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scheduled() -> JobRow {
        JobRow {
            job_id: 7,
            project_id: 1,
            action: DELETE_USER_DATA.into(),
            reference_id: "u".into(),
            description: "Delete user sessions of userId = u".into(),
            status: "scheduled".into(),
            created_at: 1_000,
            start_at: 2_000,
            updated_at: 0,
            errors: String::new(),
            runner: String::new(),
            attempt: 0,
            lease_until: 0,
        }
    }

    fn claim(base: &JobRow, runner: &str, at: i64) -> JobRow {
        JobRow {
            attempt: base.attempt + 1,
            lease_until: at + 100,
            ..base.changed(JobStatus::Running, at, runner)
        }
    }

    #[test]
    fn a_new_job_is_scheduled_with_no_update_time() {
        let job = Job::from_rows(&[scheduled()]).unwrap();
        assert_eq!(job.status, JobStatus::Scheduled);
        assert_eq!(job.updated_at, None);
        assert_eq!(job.errors, None);
        let json = serde_json::to_string(&job.api()).unwrap();
        assert_eq!(
            json,
            r#"{"jobId":7,"description":"Delete user sessions of userId = u","status":"scheduled","projectId":1,"action":"delete_user_data","referenceId":"u","createdAt":1000,"updatedAt":null,"startAt":2000,"errors":null}"#
        );
    }

    #[test]
    fn the_first_terminal_row_decides_for_good() {
        let base = scheduled();
        let a = claim(&base, "a", 2_100);
        let b = claim(&base, "b", 2_101);
        let a_done = a.changed(JobStatus::Completed, 2_500, "a");
        let b_failed = JobRow {
            errors: "boom".into(),
            ..b.changed(JobStatus::Failed, 2_600, "b")
        };
        let job = Job::from_rows(&[base.clone(), a, b, b_failed.clone(), a_done]).unwrap();
        assert_eq!(job.status, JobStatus::Completed);
        assert_eq!(job.updated_at, Some(2_500));
        // A cancellation recorded before a runner finished wins, and the reverse.
        let cancelled = base.changed(JobStatus::Cancelled, 1_500, "");
        let job = Job::from_rows(&[base, b_failed, cancelled]).unwrap();
        assert_eq!(job.status, JobStatus::Cancelled);
    }

    #[test]
    fn the_latest_claim_is_the_running_job() {
        let base = scheduled();
        let first = claim(&base, "a", 2_100);
        let renewed = JobRow {
            lease_until: 9_000,
            ..first.changed(JobStatus::Running, 2_200, "a")
        };
        let second = claim(&first, "b", 3_000);
        let job = Job::from_rows(&[second.clone(), renewed, first, base]).unwrap();
        assert_eq!(job.status, JobStatus::Running);
        assert_eq!(job.latest, second);
        assert!(!job.is_due(3_050, 0));
        assert!(job.is_due(3_100, 0), "its lease lapsed");
    }

    #[test]
    fn the_earliest_claim_of_an_attempt_wins() {
        let base = scheduled();
        let a = claim(&base, "a", 2_100);
        let b = claim(&base, "b", 2_090);
        let renewal = a.changed(JobStatus::Running, 2_050, "c");
        assert_eq!(Job::claim_winner(&[a.clone(), b.clone()], 1), Some("b"));
        assert_eq!(Job::claim_winner(std::slice::from_ref(&a), 1), Some("a"));
        assert_eq!(Job::claim_winner(&[a, b, renewal.clone()], 1), Some("c"));
        assert_eq!(Job::claim_winner(&[renewal], 2), None);
    }

    #[test]
    fn due_and_cancellable_follow_the_grace_period() {
        let job = Job::from_rows(&[scheduled()]).unwrap();
        assert!(job.is_cancellable(1_999));
        assert!(!job.is_cancellable(2_000));
        assert!(
            !job.is_due(2_000, 10),
            "a cancellation may still be landing"
        );
        assert!(job.is_due(2_010, 10));
        let at_once = JobRow {
            start_at: 1_000,
            ..scheduled()
        };
        let job = Job::from_rows(&[at_once]).unwrap();
        assert!(!job.is_cancellable(1_000));
        assert!(job.is_due(1_000, 10), "no grace: nothing to wait for");
    }

    #[test]
    fn jobs_are_listed_newest_first() {
        let older = scheduled();
        let newer = JobRow {
            job_id: 3,
            created_at: 5_000,
            ..scheduled()
        };
        let same_time_higher_id = JobRow {
            job_id: 9,
            ..scheduled()
        };
        let jobs = Job::all_from_rows(vec![older, newer, same_time_higher_id]);
        let ids: Vec<u64> = jobs.iter().map(|job| job.job_id).collect();
        assert_eq!(ids, [3, 9, 7]);
    }

    #[test]
    fn terminal_rows_that_differ_only_in_attempt_decide_the_same_way_in_any_order() {
        // Found by the property below: a tie on (updatedAt, runner, status) was
        // broken by the order the rows were read in.
        let first = JobRow {
            status: "completed".into(),
            updated_at: 12,
            runner: "a".into(),
            ..scheduled()
        };
        let second = JobRow {
            attempt: 1,
            ..first.clone()
        };
        assert_eq!(
            Job::from_rows(&[first.clone(), second.clone()]),
            Job::from_rows(&[second, first])
        );
    }

    fn any_row() -> impl Strategy<Value = JobRow> {
        (
            0u32..3,
            0i64..50,
            prop::sample::select(vec![
                "scheduled",
                "running",
                "completed",
                "failed",
                "cancelled",
            ]),
            prop::sample::select(vec!["a", "b", ""]),
        )
            .prop_map(|(attempt, at, status, runner)| JobRow {
                attempt,
                updated_at: at,
                status: status.into(),
                runner: runner.into(),
                ..scheduled()
            })
    }

    proptest! {
        #[test]
        fn the_fold_ignores_order_and_repetition(
            rows in prop::collection::vec(any_row(), 1..12),
            seed in any::<u64>(),
        ) {
            let job = Job::from_rows(&rows).unwrap();
            let mut shuffled = rows.clone();
            shuffled.extend(rows.iter().take((seed % 4) as usize).cloned());
            let len = shuffled.len();
            shuffled.rotate_left((seed as usize) % len);
            prop_assert_eq!(Job::from_rows(&shuffled).unwrap(), job.clone());
            // Once terminal, no later row changes the outcome.
            if job.status.is_terminal() {
                let mut more = rows.clone();
                more.push(job.latest.changed(JobStatus::Failed, 1_000, "z"));
                more.push(job.latest.changed(JobStatus::Completed, 1_001, "y"));
                prop_assert_eq!(Job::from_rows(&more).unwrap().status, job.status);
            }
        }
    }
}
