//! Background jobs (docs/api.md): a durable log in the `jobs` table, what the API
//! and `sessions-admin` do with it, and the runner that carries jobs out.
//!
//! Contract of [`Jobs`]: every change is one appended row ([`view`] folds a job's rows
//! into the job, first terminal row decides); reads see every write acknowledged before
//! them (`Store::read_your_writes`, on a cluster too). A job's id is its creation time
//! in ms times 1024 plus 10 random bits: unique across replicas without coordination
//! (two jobs created in the same millisecond draw the same bits once in 1024 tries;
//! [`Jobs::schedule_deletion`] checks and draws again), increasing with time, and below
//! 2^53, so JavaScript clients read it exactly.
//!
//! Scheduling, cancellation and claims race only through rows and clocks, never
//! through a lock (ClickHouse has none): a cancellation is accepted only before the
//! job's `startAt`, and a runner starts a cancellable job only `start_delay` after it
//! (longer than a cancellation's request can take), so an accepted cancellation is
//! always seen. Claims and their one outcome: [`runner`].
//!
//! [`Jobs::schedule_deletion_bounded`] (the API's) refuses a new job while the project
//! has `max_open` open (not terminal) jobs; a request for a user whose deletion is
//! still scheduled returns that job first, so it never counts twice. The count and
//! the insert are two statements: requests racing on several replicas may each pass
//! it, so the bound can be exceeded by the requests in flight.

pub mod batch;
pub mod deletion;
pub mod runner;
pub mod view;

use std::time::Duration;

use clickhouse::Row;
use rand::Rng;
use serde::Deserialize;

use sessions_shared::clickhouse::{id_list, Query, Store, StoreError};
use sessions_shared::clock::epoch_millis;
pub use view::{Job, JobJson, JobRow, JobStatus, DELETE_USER_DATA};

/// What a cancellation request found.
#[derive(Debug, PartialEq, Eq)]
pub enum Cancellation {
    Cancelled(Job),
    /// Running, finished, or past its grace period.
    TooLate(Job),
    NotFound,
}

#[derive(Row, Deserialize)]
struct Found {
    found: u64,
}

/// What a bounded deletion request came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Scheduling {
    /// The new job, or the user's deletion still scheduled.
    Scheduled(Box<Job>),
    /// The project has as many open jobs as allowed.
    Refused(OpenJobs),
}

/// The open (scheduled or running) jobs of a project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Row, Deserialize)]
pub struct OpenJobs {
    pub count: u64,
    /// The earliest `startAt` among them, epoch ms (0 when there is none).
    pub earliest_start_at: i64,
}

impl OpenJobs {
    /// Whether one more job may be opened while at most `max_open` may be.
    pub fn admits(&self, max_open: u64) -> bool {
        self.count < max_open
    }

    /// When asking again makes sense, in whole seconds from `now_ms` (at least 1): once
    /// the earliest open job is due and has run, which takes at least `run_time` (a
    /// deletion's settle and a runner's poll). No job ends sooner, so no slot frees.
    pub fn retry_after_seconds(&self, now_ms: i64, run_time: Duration) -> u64 {
        let until_due = u64::try_from(self.earliest_start_at.saturating_sub(now_ms)).unwrap_or(0);
        let run_ms = u64::try_from(run_time.as_millis()).unwrap_or(u64::MAX);
        until_due.saturating_add(run_ms).div_ceil(1000).max(1)
    }
}

/// Where a page of jobs starts: strictly after (older than) this job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobPosition {
    pub created_at: i64,
    pub job_id: u64,
}

/// The jobs of one database.
pub struct Jobs<'a> {
    store: &'a Store,
}

impl<'a> Jobs<'a> {
    pub fn new(store: &'a Store) -> Self {
        Jobs { store }
    }

    /// Appends one change of a job.
    pub async fn record(&self, row: &JobRow) -> Result<(), StoreError> {
        self.store
            .run(|client| {
                let client = client.clone();
                async move {
                    let mut insert = client.insert::<JobRow>("jobs").await?;
                    insert.write(row).await?;
                    insert.end().await
                }
            })
            .await
    }

    async fn rows(
        &self,
        filter: &str,
        bind: impl Fn(Query) -> Query,
    ) -> Result<Vec<JobRow>, StoreError> {
        let sql = format!("SELECT ?fields FROM jobs WHERE {filter}");
        self.store
            .run(|client| {
                bind(self.store.read_your_writes(client.query(&sql))).fetch_all::<JobRow>()
            })
            .await
    }

    /// The project's jobs, newest first.
    pub async fn list(&self, project_id: u32) -> Result<Vec<Job>, StoreError> {
        let rows = self
            .rows("project_id = ?", |query| query.bind(project_id))
            .await?;
        Ok(Job::all_from_rows(rows))
    }

    /// At most `limit` of the project's jobs, newest first (`createdAt`, then id),
    /// those older than `after` when given: the rows of that many jobs only.
    pub async fn page(
        &self,
        project_id: u32,
        after: Option<JobPosition>,
        limit: u64,
    ) -> Result<Vec<Job>, StoreError> {
        let older = if after.is_some() {
            " AND (created_at < ? OR (created_at = ? AND job_id < ?))"
        } else {
            ""
        };
        let filter = format!(
            "project_id = ? AND job_id IN (SELECT job_id FROM jobs WHERE project_id = ?{older} \
             GROUP BY job_id, created_at ORDER BY created_at DESC, job_id DESC LIMIT ?)"
        );
        let rows = self
            .rows(&filter, |query| {
                let query = query.bind(project_id).bind(project_id);
                let query = match after {
                    Some(position) => query
                        .bind(position.created_at)
                        .bind(position.created_at)
                        .bind(position.job_id),
                    None => query,
                };
                query.bind(limit)
            })
            .await?;
        Ok(Job::all_from_rows(rows))
    }

    /// How many jobs of the project are open, and the earliest start among them.
    pub async fn open_in(&self, project_id: u32) -> Result<OpenJobs, StoreError> {
        self.store
            .run(|client| {
                self.store
                    .read_your_writes(client.query(
                        "SELECT count() AS count, min(start_at) AS earliest_start_at FROM \
                         (SELECT job_id, any(start_at) AS start_at FROM jobs WHERE project_id = ? \
                          GROUP BY job_id \
                          HAVING countIf(status IN ('completed', 'failed', 'cancelled')) = 0)",
                    ))
                    .bind(project_id)
                    .fetch_one::<OpenJobs>()
            })
            .await
    }

    /// Appends changes of several jobs in one INSERT.
    pub async fn record_all(&self, rows: &[JobRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.store
            .run(|client| {
                let client = client.clone();
                async move {
                    let mut insert = client.insert::<JobRow>("jobs").await?;
                    for row in rows {
                        insert.write(row).await?;
                    }
                    insert.end().await
                }
            })
            .await
    }

    /// The logs of several jobs (of any projects).
    pub async fn rows_of_jobs(&self, job_ids: &[u64]) -> Result<Vec<JobRow>, StoreError> {
        if job_ids.is_empty() {
            return Ok(Vec::new());
        }
        let filter = format!("job_id IN ({})", id_list(job_ids.iter().copied()));
        self.rows(&filter, |query| query).await
    }

    /// One job of the project (`None`: unknown, or another project's).
    pub async fn get(&self, project_id: u32, job_id: u64) -> Result<Option<Job>, StoreError> {
        Ok(Job::from_rows(&self.rows_of(project_id, job_id).await?))
    }

    /// The log of one job.
    pub async fn rows_of(&self, project_id: u32, job_id: u64) -> Result<Vec<JobRow>, StoreError> {
        self.rows("project_id = ? AND job_id = ?", |query| {
            query.bind(project_id).bind(job_id)
        })
        .await
    }

    /// Every job not finished yet, of every project (what runners look at).
    pub async fn open(&self) -> Result<Vec<Job>, StoreError> {
        let rows = self
            .rows(
                "job_id IN (SELECT job_id FROM jobs GROUP BY job_id \
                 HAVING countIf(status IN ('completed', 'failed', 'cancelled')) = 0)",
                |query| query,
            )
            .await?;
        Ok(Job::all_from_rows(rows))
    }

    /// Schedules the deletion of `user_id`'s data in the project, to start after
    /// `grace`; a deletion of the same user still scheduled is returned instead. Not
    /// bounded (`sessions-admin`): [`Jobs::schedule_deletion_bounded`] is.
    pub async fn schedule_deletion(
        &self,
        project_id: u32,
        user_id: &str,
        grace: Duration,
    ) -> Result<Job, StoreError> {
        match self
            .schedule_deletion_bounded(project_id, user_id, grace, u64::MAX)
            .await?
        {
            Scheduling::Scheduled(job) => Ok(*job),
            Scheduling::Refused(_) => unreachable!("no project has u64::MAX open jobs"),
        }
    }

    /// [`Jobs::schedule_deletion`], refused while the project has `max_open` open jobs
    /// or more (a deletion of the same user still scheduled is returned all the same).
    pub async fn schedule_deletion_bounded(
        &self,
        project_id: u32,
        user_id: &str,
        grace: Duration,
        max_open: u64,
    ) -> Result<Scheduling, StoreError> {
        let rows = self
            .rows(
                "project_id = ? AND action = ? AND reference_id = ?",
                |query| query.bind(project_id).bind(DELETE_USER_DATA).bind(user_id),
            )
            .await?;
        if let Some(scheduled) = Job::all_from_rows(rows)
            .into_iter()
            .find(|job| job.status == JobStatus::Scheduled)
        {
            return Ok(Scheduling::Scheduled(Box::new(scheduled)));
        }
        if max_open < u64::MAX {
            let open = self.open_in(project_id).await?;
            if !open.admits(max_open) {
                return Ok(Scheduling::Refused(open));
            }
        }
        let created_at = epoch_millis();
        let job_id = loop {
            let candidate = (created_at as u64) << 10 | rand::thread_rng().gen_range(0..1024);
            let taken: Found = self
                .store
                .run(|client| {
                    self.store
                        .read_your_writes(
                            client.query("SELECT count() AS found FROM jobs WHERE job_id = ?"),
                        )
                        .bind(candidate)
                        .fetch_one()
                })
                .await?;
            if taken.found == 0 {
                break candidate;
            }
        };
        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let row = JobRow {
            job_id,
            project_id,
            action: DELETE_USER_DATA.to_owned(),
            reference_id: user_id.to_owned(),
            description: format!("Delete user sessions of userId = {user_id}"),
            status: JobStatus::Scheduled.as_str().to_owned(),
            created_at,
            start_at: created_at.saturating_add(grace_ms),
            updated_at: 0,
            errors: String::new(),
            runner: String::new(),
            attempt: 0,
            lease_until: 0,
        };
        self.record(&row).await?;
        Ok(Scheduling::Scheduled(Box::new(
            Job::from_rows(&[row]).expect("one row is a job"),
        )))
    }

    /// Cancels a scheduled job whose grace period is not over.
    pub async fn cancel(&self, project_id: u32, job_id: u64) -> Result<Cancellation, StoreError> {
        let Some(job) = self.get(project_id, job_id).await? else {
            return Ok(Cancellation::NotFound);
        };
        let now = epoch_millis();
        if !job.is_cancellable(now) {
            return Ok(Cancellation::TooLate(job));
        }
        self.record(&job.latest.changed(JobStatus::Cancelled, now, ""))
            .await?;
        // Read back: the first terminal row decides (a cancellation that lost to
        // nothing else is what this returns; anything else is shown as it is).
        let job = self.get(project_id, job_id).await?.unwrap_or(job);
        if job.status == JobStatus::Cancelled {
            Ok(Cancellation::Cancelled(job))
        } else {
            Ok(Cancellation::TooLate(job))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_at_its_bound_is_refused_until_a_job_ends() {
        let open = |count| OpenJobs {
            count,
            earliest_start_at: 0,
        };
        assert!(open(0).admits(1));
        assert!(open(999).admits(1_000));
        assert!(!open(1_000).admits(1_000));
        assert!(!open(1_001).admits(1_000));
        assert!(!open(0).admits(0));
        assert!(open(u64::MAX - 1).admits(u64::MAX));
    }

    #[test]
    fn retry_after_is_when_the_earliest_open_job_has_run() {
        let run_time = Duration::from_millis(32_000);
        let open = |earliest_start_at| OpenJobs {
            count: 1_000,
            earliest_start_at,
        };
        // Due already (the runner is busy): the run time, rounded up.
        assert_eq!(open(1_000).retry_after_seconds(5_000, run_time), 32);
        assert_eq!(
            open(0).retry_after_seconds(5_000, Duration::from_millis(1)),
            1
        );
        assert_eq!(
            open(0).retry_after_seconds(5_000, Duration::ZERO),
            1,
            "at least 1"
        );
        // Due in an hour: an hour plus the run time.
        let in_an_hour = 5_000 + 3_600_000;
        assert_eq!(open(in_an_hour).retry_after_seconds(5_000, run_time), 3_632);
        assert_eq!(
            open(5_001).retry_after_seconds(5_000, Duration::from_millis(500)),
            1,
            "501 ms rounds up to 1 s"
        );
        assert_eq!(
            open(i64::MAX).retry_after_seconds(i64::MIN, Duration::MAX),
            u64::MAX / 1000 + 1
        );
    }
}
