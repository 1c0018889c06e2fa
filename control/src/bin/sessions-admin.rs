//! `sessions-admin`: migrations, organizations, API keys, projects (operations.md), and
//! user deletion jobs (api-users.md: the same jobs as the API's, run by `sessions-query`).
//! Prints JSON on stdout; on failure prints `error: <reason>` on stderr and exits 1.

use std::io::Read;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::json;
use sessions_control::jobs::Jobs;
use sessions_control::rebuild::{rebuild_sessions, Rebuilt};
use sessions_control::tenancy::{NewProject, Platform, Tenancy};
use sessions_shared::clickhouse::Store;
use sessions_shared::config::ClickHouseSettings;
use sessions_shared::migrations::migrate;
use sessions_shared::read_model::MAX_USER_ID_BYTES;

#[derive(Parser)]
#[command(
    name = "sessions-admin",
    version,
    about = "Administer the sessions read model: migrations, organizations, API keys, projects, user deletion jobs"
)]
struct Cli {
    #[command(flatten)]
    clickhouse: ClickHouseSettings,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the database and apply pending migrations.
    Migrate,
    /// Move an existing `sessions` table to the current layout (copy and swap; run
    /// with ingest stopped). A table that has it already is left alone.
    RebuildSessions,
    /// Organizations.
    Org {
        #[command(subcommand)]
        command: OrgCommand,
    },
    /// Organization API keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Projects.
    Project {
        #[command(subcommand)]
        command: ProjectCommand,
    },
    /// A project's users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// A project's jobs.
    Job {
        #[command(subcommand)]
        command: JobCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Schedule the deletion of everything stored about a user (a job that any running
    /// sessions-query carries out; a deletion still scheduled is returned instead).
    Delete {
        #[arg(long)]
        project: u32,
        #[arg(long)]
        user: String,
        /// Seconds before it starts (it can be cancelled through the API meanwhile).
        #[arg(long, default_value = "0")]
        grace_secs: u64,
    },
}

#[derive(Subcommand)]
enum JobCommand {
    /// List a project's jobs, newest first, as a JSON array.
    List {
        #[arg(long)]
        project: u32,
    },
}

#[derive(Subcommand)]
enum OrgCommand {
    /// Create an organization and its first API key (shown only here).
    Create {
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create another API key for an organization.
    Create {
        #[arg(long)]
        org: u64,
    },
    /// Revoke an API key, read from the environment variable API_KEY or else from the
    /// first line of standard input (never a flag: the command line of a running
    /// process is visible to every local user, e.g. in `ps`).
    Revoke,
}

#[derive(Subcommand)]
enum ProjectCommand {
    /// Create a project of an organization.
    Create {
        #[arg(long)]
        org: u64,
        #[arg(long)]
        name: String,
        /// A chosen project key (20 letters and digits); random if absent.
        #[arg(long)]
        key: Option<String>,
        /// What the project's tracker runs on: web (the default) or ios.
        #[arg(long, default_value = "web", value_parser = parse_platform)]
        platform: Platform,
    },
    /// List projects as a JSON array.
    List {
        #[arg(long)]
        org: Option<u64>,
    },
}

async fn run(cli: Cli) -> anyhow::Result<serde_json::Value> {
    let store = Store::new(&cli.clickhouse)?;
    let applied = migrate(&store).await?;
    let tenancy = Tenancy::new(&store);
    Ok(match cli.command {
        Command::Migrate => json!({"database": store.database(), "applied": applied}),
        Command::RebuildSessions => match rebuild_sessions(&store).await? {
            Rebuilt::AlreadyCurrent => json!({"rebuilt": false}),
            Rebuilt::Copied { rows } => json!({"rebuilt": true, "rows": rows}),
        },
        Command::Org {
            command: OrgCommand::Create { name },
        } => {
            let created = tenancy.create_organization(&name).await?;
            json!({"orgId": created.org_id, "apiKey": created.api_key})
        }
        Command::Key {
            command: KeyCommand::Create { org },
        } => json!({"apiKey": tenancy.create_key(org).await?}),
        Command::Key {
            command: KeyCommand::Revoke,
        } => {
            tenancy.revoke_key(&key_to_revoke()?).await?;
            json!({"revoked": true})
        }
        Command::Project {
            command:
                ProjectCommand::Create {
                    org,
                    name,
                    key,
                    platform,
                },
        } => {
            // The same creation as `POST /api/v1/projects`, without its cap.
            let project = tenancy
                .create_project_of(NewProject {
                    org_id: org,
                    name: &name,
                    platform,
                    project_key: key.as_deref(),
                    max_projects_of_org: None,
                })
                .await?;
            json!({"projectId": project.project_id, "projectKey": project.project_key})
        }
        Command::Project {
            command: ProjectCommand::List { org },
        } => {
            let projects = tenancy.list_projects(org).await?;
            serde_json::Value::Array(projects.iter().map(|project| project.to_json()).collect())
        }
        Command::User {
            command:
                UserCommand::Delete {
                    project,
                    user,
                    grace_secs,
                },
        } => {
            if user.is_empty() || user.len() > MAX_USER_ID_BYTES {
                anyhow::bail!("a user id is 1 to {MAX_USER_ID_BYTES} bytes");
            }
            let projects = tenancy.list_projects(None).await?;
            if !projects.iter().any(|known| known.project_id == project) {
                anyhow::bail!("project {project} does not exist");
            }
            let grace = std::time::Duration::from_secs(grace_secs);
            let job = Jobs::new(&store)
                .schedule_deletion(project, &user, grace)
                .await?;
            serde_json::to_value(job.api())?
        }
        Command::Job {
            command: JobCommand::List { project },
        } => {
            let jobs = Jobs::new(&store).list(project).await?;
            let views: Vec<_> = jobs.iter().map(|job| job.api()).collect();
            serde_json::to_value(views)?
        }
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    sessions_shared::telemetry::init_logging_with_default("warn");
    let cli = Cli::parse();
    match run(cli).await {
        Ok(output) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The longest input `key revoke` reads (keys are 40 characters).
const MAX_KEY_INPUT_BYTES: u64 = 1024;

/// The key `key revoke` revokes: `API_KEY`, else the first line of standard input.
fn key_to_revoke() -> anyhow::Result<String> {
    if let Ok(key) = std::env::var("API_KEY") {
        return Ok(key.trim().to_owned());
    }
    let mut input = String::new();
    std::io::stdin()
        .take(MAX_KEY_INPUT_BYTES)
        .read_to_string(&mut input)?;
    let key = input.lines().next().unwrap_or("").trim();
    anyhow::ensure!(
        !key.is_empty(),
        "no key to revoke: give it in API_KEY or on standard input"
    );
    Ok(key.to_owned())
}

fn parse_platform(value: &str) -> Result<Platform, String> {
    Platform::parse(value).ok_or_else(|| "must be web or ios".to_owned())
}
