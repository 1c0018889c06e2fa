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

pub mod deletion;
pub mod runner;
pub mod view;

use std::time::Duration;

use clickhouse::Row;
use rand::Rng;
use serde::Deserialize;

use sessions_shared::clickhouse::{Query, Store, StoreError};
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
    /// `grace`; a deletion of the same user still scheduled is returned instead.
    pub async fn schedule_deletion(
        &self,
        project_id: u32,
        user_id: &str,
        grace: Duration,
    ) -> Result<Job, StoreError> {
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
            return Ok(scheduled);
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
        Ok(Job::from_rows(&[row]).expect("one row is a job"))
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
