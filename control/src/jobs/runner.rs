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

use std::collections::HashMap;
use std::time::Duration;

use rand::Rng;

use crate::jobs::batch::{fits_one_batch, DeletedUser};
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
    /// Counts the `ALTER … DELETE` mutations deletions issue, when given.
    mutations: Option<prometheus::IntCounter>,
}

impl JobRunner {
    pub fn new(store: Store, settings: RunnerSettings) -> JobRunner {
        let id = format!("{:016x}", rand::thread_rng().gen::<u64>());
        JobRunner {
            store,
            settings,
            id,
            outcomes: None,
            mutations: None,
        }
    }

    /// Counts every `ALTER … DELETE` this runner's deletions issue in `mutations`.
    pub fn counting_mutations_in(mut self, mutations: prometheus::IntCounter) -> JobRunner {
        self.mutations = Some(mutations);
        self
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

    /// Takes every job due now, oldest first, in batches ([`batches`]): the deletions
    /// due together are claimed, erased and ended together (`deletion`), each job with
    /// its own claim and its own outcome; how many this runner finished. A transient
    /// error ends the pass (the jobs it left resume once their leases lapse).
    pub async fn run_due(&self) -> Result<usize, StoreError> {
        let now = epoch_millis();
        let start_delay = self.settings.start_delay.as_millis() as i64;
        let mut due: Vec<Job> = Jobs::new(&self.store)
            .open()
            .await?
            .into_iter()
            .filter(|job| job.is_due(now, start_delay))
            .collect();
        due.sort_by_key(|job| (job.start_at, job.job_id));
        let mut finished = 0;
        for batch in batches(due) {
            let attempts = self.attempt_batch(&batch).await?;
            finished += attempts
                .iter()
                .filter(|attempt| matches!(attempt, Attempt::Finished(_)))
                .count();
        }
        Ok(finished)
    }

    /// Claims `job`, and runs it if the claim wins (module contract).
    pub async fn attempt(&self, job: &Job) -> Result<Attempt, StoreError> {
        let mut attempts = self.attempt_batch(std::slice::from_ref(job)).await?;
        Ok(attempts.remove(0))
    }

    /// Claims every job of `batch` (one INSERT), waits `CLAIM_SETTLE` once, runs
    /// together those whose claim won while renewing their leases (one INSERT each
    /// time), and records each one's outcome (one INSERT): per job, in order, what its
    /// attempt came to. A transient error of any job is returned after the others'
    /// outcomes are recorded; its job resumes once its lease lapses.
    pub async fn attempt_batch(&self, batch: &[Job]) -> Result<Vec<Attempt>, StoreError> {
        let jobs = Jobs::new(&self.store);
        let claims: Vec<JobRow> = batch
            .iter()
            .map(|job| self.running_row(&job.latest, job.latest.attempt + 1))
            .collect();
        jobs.record_all(&claims).await?;
        tokio::time::sleep(CLAIM_SETTLE).await;
        let ids: Vec<u64> = batch.iter().map(|job| job.job_id).collect();
        let mut logs: HashMap<u64, Vec<JobRow>> = HashMap::new();
        for row in jobs.rows_of_jobs(&ids).await? {
            logs.entry(row.job_id).or_default().push(row);
        }
        let mut attempts = vec![Attempt::LeftToOthers; batch.len()];
        let mut won: Vec<(usize, Job)> = Vec::new();
        for (index, claim) in claims.iter().enumerate() {
            let rows = logs
                .get(&claim.job_id)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let Some(current) = Job::from_rows(rows) else {
                continue;
            };
            if current.status.is_terminal()
                || Job::claim_winner(rows, claim.attempt) != Some(&self.id)
            {
                continue;
            }
            tracing::info!(
                job_id = current.job_id,
                attempt = claim.attempt,
                "job started"
            );
            won.push((index, current));
        }
        if won.is_empty() {
            return Ok(attempts);
        }
        let outcomes = {
            let running: Vec<&Job> = won.iter().map(|(_, job)| job).collect();
            let work = self.work(&running);
            tokio::pin!(work);
            let mut renewal = tokio::time::interval(self.settings.lease / 3);
            renewal.tick().await;
            loop {
                tokio::select! {
                    outcomes = &mut work => break outcomes,
                    _ = renewal.tick() => {
                        let renewals: Vec<JobRow> = won
                            .iter()
                            .map(|(index, _)| self.running_row(&claims[*index], claims[*index].attempt))
                            .collect();
                        if let Err(error) = jobs.record_all(&renewals).await {
                            tracing::warn!(code = ?error.code(), "job runner: lease renewal failed");
                        }
                    }
                }
            }
        };
        let mut ends = Vec::new();
        let mut interrupted = None;
        for ((index, job), outcome) in won.iter().zip(outcomes) {
            let claim = &claims[*index];
            match outcome {
                Ok(()) => ends.push((
                    *index,
                    claim.changed(JobStatus::Completed, epoch_millis(), &self.id),
                )),
                Err(error) if error.is_transient() => {
                    self.count("interrupted");
                    tracing::warn!(job_id = job.job_id, code = ?error.code(), "job interrupted; it resumes when its lease lapses");
                    interrupted.get_or_insert(error);
                }
                Err(error) => ends.push((
                    *index,
                    JobRow {
                        errors: match error.code() {
                            Some(code) => {
                                format!("ClickHouse refused a deletion statement (code {code})")
                            }
                            None => "ClickHouse refused a deletion statement".to_owned(),
                        },
                        ..claim.changed(JobStatus::Failed, epoch_millis(), &self.id)
                    },
                )),
            }
        }
        let rows: Vec<JobRow> = ends.iter().map(|(_, row)| row.clone()).collect();
        jobs.record_all(&rows).await?;
        for (index, end) in ends {
            let status = JobStatus::parse(&end.status).expect("written above");
            self.count(status.as_str());
            tracing::info!(job_id = end.job_id, status = status.as_str(), "job ended");
            attempts[index] = Attempt::Finished(status);
        }
        match interrupted {
            Some(error) => Err(error),
            None => Ok(attempts),
        }
    }

    /// What the jobs' actions do, per job in order: the deletions together, any other
    /// action refused.
    async fn work(&self, jobs: &[&Job]) -> Vec<Result<(), StoreError>> {
        let deletions: Vec<usize> = (0..jobs.len())
            .filter(|&index| jobs[index].action == DELETE_USER_DATA)
            .collect();
        let users: Vec<DeletedUser> = deletions
            .iter()
            .map(|&index| DeletedUser {
                project_id: jobs[index].project_id,
                user_id: jobs[index].reference_id.clone(),
            })
            .collect();
        let mut reports = if users.is_empty() {
            Vec::new()
        } else {
            Deletion {
                store: &self.store,
                users: &users,
                settle: self.settings.settle,
                mutations: self.mutations.as_ref(),
            }
            .run()
            .await
        }
        .into_iter();
        let mut outcomes = Vec::with_capacity(jobs.len());
        for job in jobs {
            if job.action != DELETE_USER_DATA {
                outcomes.push(Err(StoreError::Rejected {
                    code: None,
                    message: "unknown job action".into(),
                }));
                continue;
            }
            let report = reports.next().expect("one report per deletion");
            outcomes.push(report.map(|report| {
                tracing::info!(
                    job_id = job.job_id,
                    sessions = report.sessions_marked,
                    rounds = report.rounds,
                    "user data deleted"
                );
            }));
        }
        outcomes
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

/// `due` (in order) cut into batches run one after the other: consecutive deletions
/// while they fit one (`batch::fits_one_batch`), any other action alone.
pub fn batches(due: Vec<Job>) -> Vec<Vec<Job>> {
    let mut batches: Vec<Vec<Job>> = Vec::new();
    for job in due {
        let joins_last = job.action == DELETE_USER_DATA
            && batches.last().is_some_and(|last| {
                last.iter().all(|job| job.action == DELETE_USER_DATA)
                    && fits_one_batch(
                        last.iter()
                            .chain(std::iter::once(&job))
                            .map(|job| (job.project_id, job.reference_id.as_str())),
                    )
            });
        match batches.last_mut() {
            Some(last) if joins_last => last.push(job),
            _ => batches.push(vec![job]),
        }
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::batch::{MAX_BATCH_USERS, MAX_CONDITION_BYTES};

    fn job(job_id: u64, project_id: u32, user: &str, action: &str) -> Job {
        Job::from_rows(&[JobRow {
            job_id,
            project_id,
            action: action.into(),
            reference_id: user.into(),
            description: String::new(),
            status: "scheduled".into(),
            created_at: 1,
            start_at: 1,
            updated_at: 0,
            errors: String::new(),
            runner: String::new(),
            attempt: 0,
            lease_until: 0,
        }])
        .unwrap()
    }

    fn sizes(batches: &[Vec<Job>]) -> Vec<usize> {
        batches.iter().map(Vec::len).collect()
    }

    #[test]
    fn due_deletions_are_cut_into_bounded_batches_in_order() {
        let due: Vec<Job> = (0..2_500)
            .map(|n| job(n, (n % 3) as u32, &format!("nobody-{n}"), DELETE_USER_DATA))
            .collect();
        let cut = batches(due);
        assert_eq!(sizes(&cut), [MAX_BATCH_USERS, MAX_BATCH_USERS, 500]);
        let ids: Vec<u64> = cut.iter().flatten().map(|job| job.job_id).collect();
        assert_eq!(
            ids,
            (0..2_500).collect::<Vec<_>>(),
            "every job once, in order"
        );
        // Long ids fill a batch by bytes first.
        let long = "x".repeat(256);
        let due: Vec<Job> = (0..400)
            .map(|n| job(n, 1, &format!("{long}{n}")[..256], DELETE_USER_DATA))
            .collect();
        let cut = batches(due);
        assert!(cut.len() > 1, "{:?}", sizes(&cut));
        for batch in &cut {
            let bytes: usize = batch
                .iter()
                .map(|job| crate::jobs::batch::condition_cost(&job.reference_id))
                .sum();
            assert!(bytes <= MAX_CONDITION_BYTES);
        }
        assert_eq!(batches(Vec::new()).len(), 0);
    }

    #[test]
    fn another_action_runs_alone() {
        let due = vec![
            job(1, 1, "a", DELETE_USER_DATA),
            job(2, 1, "b", DELETE_USER_DATA),
            job(3, 1, "c", "something_else"),
            job(4, 1, "d", DELETE_USER_DATA),
        ];
        assert_eq!(sizes(&batches(due)), [2, 1, 1]);
    }
}
