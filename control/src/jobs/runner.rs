//! The job runner: every replica of `sessions-query` runs one; together they carry out
//! each job once, and each job has one outcome.
//!
//! Contract of [`JobRunner::run_due`]: a job is taken when it is due (`Job::is_due`: its
//! start, plus `start_delay` when it could have been cancelled; or a lapsed lease) by
//!
//! 1. **claiming** it: a `running` row of the next attempt, with a lease;
//! 2. **waiting** `CLAIM_SETTLE`, then reading the job's log: the earliest claim of
//!    the attempt wins (`Job::claim_winner`); the others, and everyone when the job
//!    turned terminal meanwhile, leave it;
//! 3. **running** it while renewing the lease every third of it;
//! 4. **recording** the outcome: `completed`, or `failed` with a reason for an error a
//!    retry cannot fix. A transient error records nothing: the lease lapses and the
//!    job is resumed, by any runner, from the start (every step is idempotent).
//!
//! Two runners can still both run one job (a claim slower than `CLAIM_SETTLE`, a
//! runner paused past its lease). That is safe: deletion is idempotent (the second
//! run finds nothing left to delete), and the job's outcome is its first terminal
//! row, which no later row changes (`view`).

use std::time::Duration;

use rand::Rng;

use crate::jobs::deletion::Deletion;
use crate::jobs::{Job, JobRow, JobStatus, Jobs, DELETE_USER_DATA};
use sessions_shared::clickhouse::{Store, StoreError};
use sessions_shared::clock::epoch_millis;
use sessions_shared::shutdown::Shutdown;

/// How long a claimer waits before reading who won: longer than a claim INSERT takes.
const CLAIM_SETTLE: Duration = Duration::from_millis(500);

/// How the runner paces itself.
#[derive(Clone, Debug)]
pub struct RunnerSettings {
    /// How often due jobs are looked for.
    pub poll: Duration,
    /// How long a claim holds without renewal: a runner that died is replaced this long
    /// after its last renewal.
    pub lease: Duration,
    /// Extra wait after a cancellable job's start (longer than a cancellation request).
    pub start_delay: Duration,
    /// A deletion's wait between marking sessions and erasing them (`deletion`).
    pub settle: Duration,
}

/// What one attempt at a job came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// Another runner's claim won, or the job finished meanwhile.
    LeftToOthers,
    /// This runner recorded the job's end (`Completed` or `Failed`).
    Finished(JobStatus),
}

pub struct JobRunner {
    store: Store,
    settings: RunnerSettings,
    id: String,
    /// Counts attempts by outcome (`completed`, `failed`, `interrupted`), when given.
    outcomes: Option<prometheus::IntCounterVec>,
}

impl JobRunner {
    pub fn new(store: Store, settings: RunnerSettings) -> JobRunner {
        let id = format!("{:016x}", rand::thread_rng().gen::<u64>());
        JobRunner {
            store,
            settings,
            id,
            outcomes: None,
        }
    }

    /// Counts every attempt this runner carries out in `outcomes`, labelled
    /// `completed`, `failed` or `interrupted`.
    pub fn counting_in(mut self, outcomes: prometheus::IntCounterVec) -> JobRunner {
        self.outcomes = Some(outcomes);
        self
    }

    fn count(&self, outcome: &str) {
        if let Some(outcomes) = &self.outcomes {
            outcomes.with_label_values(&[outcome]).inc();
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs due jobs every `poll` until `shutdown` (a job cut short by it is resumed
    /// once its lease lapses).
    pub async fn run_forever(self, shutdown: Shutdown) {
        tracing::info!(runner = %self.id, "job runner started");
        let stopped = shutdown.wait();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                () = &mut stopped => return,
                () = tokio::time::sleep(self.settings.poll) => {}
            }
            tokio::select! {
                () = &mut stopped => return,
                result = self.run_due() => {
                    if let Err(error) = result {
                        tracing::warn!(code = ?error.code(), transient = error.is_transient(), "job runner: clickhouse request failed");
                    }
                }
            }
        }
    }

    /// Takes every job due now, one after the other; how many this runner finished.
    pub async fn run_due(&self) -> Result<usize, StoreError> {
        let now = epoch_millis();
        let start_delay = self.settings.start_delay.as_millis() as i64;
        let due: Vec<Job> = Jobs::new(&self.store)
            .open()
            .await?
            .into_iter()
            .filter(|job| job.is_due(now, start_delay))
            .collect();
        let mut finished = 0;
        for job in due {
            if let Attempt::Finished(_) = self.attempt(&job).await? {
                finished += 1;
            }
        }
        Ok(finished)
    }

    /// Claims `job`, and runs it if the claim wins (module contract).
    pub async fn attempt(&self, job: &Job) -> Result<Attempt, StoreError> {
        let jobs = Jobs::new(&self.store);
        let attempt = job.latest.attempt + 1;
        let claim = self.running_row(&job.latest, attempt);
        jobs.record(&claim).await?;
        tokio::time::sleep(CLAIM_SETTLE).await;
        let rows = jobs.rows_of(job.project_id, job.job_id).await?;
        let current = Job::from_rows(&rows).expect("the claim is a row");
        if current.status.is_terminal() || Job::claim_winner(&rows, attempt) != Some(&self.id) {
            return Ok(Attempt::LeftToOthers);
        }
        tracing::info!(job_id = job.job_id, attempt, "job started");
        let outcome = {
            let work = self.work(&current);
            tokio::pin!(work);
            let mut renewal = tokio::time::interval(self.settings.lease / 3);
            renewal.tick().await;
            loop {
                tokio::select! {
                    outcome = &mut work => break outcome,
                    _ = renewal.tick() => {
                        if let Err(error) = jobs.record(&self.running_row(&claim, attempt)).await {
                            tracing::warn!(code = ?error.code(), "job runner: lease renewal failed");
                        }
                    }
                }
            }
        };
        let end = match outcome {
            Ok(()) => claim.changed(JobStatus::Completed, epoch_millis(), &self.id),
            Err(error) if error.is_transient() => {
                self.count("interrupted");
                tracing::warn!(job_id = job.job_id, code = ?error.code(), "job interrupted; it resumes when its lease lapses");
                return Err(error);
            }
            Err(error) => JobRow {
                errors: match error.code() {
                    Some(code) => format!("ClickHouse refused a deletion statement (code {code})"),
                    None => "ClickHouse refused a deletion statement".to_owned(),
                },
                ..claim.changed(JobStatus::Failed, epoch_millis(), &self.id)
            },
        };
        jobs.record(&end).await?;
        let status = JobStatus::parse(&end.status).expect("written above");
        self.count(status.as_str());
        tracing::info!(job_id = job.job_id, status = status.as_str(), "job ended");
        Ok(Attempt::Finished(status))
    }

    /// What the job's action does.
    async fn work(&self, job: &Job) -> Result<(), StoreError> {
        match job.action.as_str() {
            DELETE_USER_DATA => {
                let report = Deletion {
                    store: &self.store,
                    project_id: job.project_id,
                    user_id: &job.reference_id,
                    settle: self.settings.settle,
                }
                .run()
                .await?;
                tracing::info!(
                    job_id = job.job_id,
                    sessions = report.sessions_marked,
                    rounds = report.rounds,
                    "user data deleted"
                );
                Ok(())
            }
            _ => Err(StoreError::Rejected {
                code: None,
                message: "unknown job action".into(),
            }),
        }
    }

    /// A `running` row of `attempt` by this runner, leased from now.
    fn running_row(&self, base: &JobRow, attempt: u32) -> JobRow {
        let now = epoch_millis();
        JobRow {
            attempt,
            lease_until: now + self.settings.lease.as_millis() as i64,
            ..base.changed(JobStatus::Running, now, &self.id)
        }
    }
}
