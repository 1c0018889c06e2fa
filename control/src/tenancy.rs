//! Organizations, API keys and projects: what `sessions-admin` writes and the query
//! service reads to authorize requests.
//!
//! Contract: an API key is shown once, when created, and stored only as the lowercase
//! hex SHA-256 of its bytes (keys are 40 random letters and digits, ~238 bits, so a
//! fast hash is enough: there is nothing to brute-force). Revoking writes a newer row
//! for the same hash; readers take the newest row per hash.
//!
//! Projects: `sessions-admin project create` and `POST /api/v1/projects` both go
//! through [`Tenancy::create_project_of`], so they make the same project: a name of 1
//! to [`MAX_PROJECT_NAME_BYTES`] bytes (not blank), a platform ([`Platform`], stored in
//! `project_platforms` before the project's row, `web` when absent), a fresh key, and
//! an id nobody else holds, also when several processes create projects at once: the
//! id is claimed in `project_id_claims` and kept only when the claim is the only one
//! read back (schemas/010; the later of two reads sees the other's claim, so two
//! creators never share an id). The project's row is written last: once it is readable,
//! the project is whole. An optional cap bounds an organization's projects (the API's
//! `MAX_PROJECTS_PER_ORG`); creations running at once may pass it by their number.

use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use sessions_shared::clickhouse::{Row, Store, StoreError};
use sessions_shared::clock::epoch_millis;

pub const API_KEY_LENGTH: usize = 40;
pub const PROJECT_KEY_LENGTH: usize = 20;
const MAX_NAME_BYTES: usize = 256;
/// Longest project name, in bytes (the API's contract).
pub const MAX_PROJECT_NAME_BYTES: usize = 200;
/// Claims of a project id before a creation gives up (transiently): each lost claim
/// means another creator took that id at the same moment.
const MAX_ID_CLAIMS: u32 = 8;

/// The platform of a project: what its tracker runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Platform {
    #[default]
    Web,
    Ios,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Web => "web",
            Platform::Ios => "ios",
        }
    }

    /// `web` or `ios`, exactly.
    pub fn parse(text: &str) -> Option<Platform> {
        match text {
            "web" => Some(Platform::Web),
            "ios" => Some(Platform::Ios),
            _ => None,
        }
    }

    /// A stored platform; anything unknown (or none) reads as the default.
    fn from_stored(text: &str) -> Platform {
        Platform::parse(text).unwrap_or_default()
    }
}

/// A project to create: its organization, name, platform, and key (random if none).
#[derive(Clone, Copy, Debug)]
pub struct NewProject<'a> {
    pub org_id: u64,
    pub name: &'a str,
    pub platform: Platform,
    pub project_key: Option<&'a str>,
    /// Refuse the creation when the organization has this many projects already.
    pub max_projects_of_org: Option<u64>,
}

/// A project with its platform, as `GET /api/v1/projects/:projectKey` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectDetails {
    pub project: Project,
    pub platform: Platform,
}

#[derive(Debug, thiserror::Error)]
pub enum TenancyError {
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A field of a project to create is not valid: `name` or `platform`.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        field: &'static str,
        reason: &'static str,
    },
    /// The organization has as many projects as it may have.
    #[error("the organization has {limit} projects, the most it may have")]
    TooManyProjects { limit: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedOrganization {
    pub org_id: u64,
    pub api_key: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Row)]
pub struct Project {
    pub project_id: u32,
    pub project_key: String,
    pub org_id: u64,
    pub name: String,
}

impl Project {
    /// The JSON `sessions-admin` prints for a project.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "projectId": self.project_id,
            "projectKey": self.project_key,
            "orgId": self.org_id,
            "name": self.name,
        })
    }
}

/// An API key row as readers need it.
#[derive(Clone, Debug, Deserialize, Row)]
pub struct ActiveKey {
    pub key_hash: String,
    pub org_id: u64,
}

/// Lowercase hex SHA-256 of a key.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn random_alphanumeric(length: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rngs::OsRng;
    (0..length)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

pub fn is_valid_project_key(key: &str) -> bool {
    key.len() == PROJECT_KEY_LENGTH && key.bytes().all(|byte| byte.is_ascii_alphanumeric())
}

fn validate_name(name: &str) -> Result<(), TenancyError> {
    if name.trim().is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(TenancyError::InvalidInput(format!(
            "name must be 1 to {MAX_NAME_BYTES} bytes and not blank"
        )));
    }
    Ok(())
}

/// A project's name: 1 to [`MAX_PROJECT_NAME_BYTES`] bytes, not only whitespace.
pub fn validate_project_name(name: &str) -> Result<(), TenancyError> {
    if name.trim().is_empty() {
        return Err(TenancyError::InvalidField {
            field: "name",
            reason: "must not be empty",
        });
    }
    if name.len() > MAX_PROJECT_NAME_BYTES {
        return Err(TenancyError::InvalidField {
            field: "name",
            reason: "must be at most 200 bytes",
        });
    }
    Ok(())
}

#[derive(Row, Deserialize)]
struct ClaimKey {
    project_key: String,
}

#[derive(Row, Deserialize)]
struct StoredPlatform {
    platform: String,
}

#[derive(Row, Deserialize)]
struct Count {
    count: u64,
}

#[derive(Row, Deserialize)]
struct MaxId {
    max_id: u64,
}

#[derive(Row, Deserialize)]
struct KeyState {
    key_org: u64,
    is_revoked: u8,
    latest_version: u64,
}

/// Tenancy operations on one ClickHouse database (migrated).
pub struct Tenancy<'a> {
    store: &'a Store,
}

impl<'a> Tenancy<'a> {
    pub fn new(store: &'a Store) -> Self {
        Tenancy { store }
    }

    async fn next_id(&self, table: &str, column: &str) -> Result<u64, TenancyError> {
        let sql = format!("SELECT toUInt64(max({column})) AS max_id FROM {table}");
        let row: MaxId = self
            .store
            .run(|client| client.query(&sql).fetch_one())
            .await?;
        Ok(row.max_id + 1)
    }

    pub async fn organization_exists(&self, org_id: u64) -> Result<bool, TenancyError> {
        let row: Count = self
            .store
            .run(|client| {
                client
                    .query("SELECT count() AS count FROM organizations WHERE org_id = ?")
                    .bind(org_id)
                    .fetch_one()
            })
            .await?;
        Ok(row.count > 0)
    }

    async fn require_organization(&self, org_id: u64) -> Result<(), TenancyError> {
        if self.organization_exists(org_id).await? {
            Ok(())
        } else {
            Err(TenancyError::NotFound(format!(
                "organization {org_id} does not exist"
            )))
        }
    }

    /// Creates an organization and its first API key. Ids are allocated as max + 1:
    /// run one `sessions-admin` at a time per database.
    pub async fn create_organization(
        &self,
        name: &str,
    ) -> Result<CreatedOrganization, TenancyError> {
        validate_name(name)?;
        let org_id = self.next_id("organizations", "org_id").await?;
        self.store
            .run(|client| {
                client
                    .query(
                        "INSERT INTO organizations (org_id, name, created_at) VALUES (?, ?, now())",
                    )
                    .bind(org_id)
                    .bind(name)
                    .execute()
            })
            .await?;
        let api_key = self.insert_key(org_id).await?;
        Ok(CreatedOrganization { org_id, api_key })
    }

    /// A new API key for an existing organization.
    pub async fn create_key(&self, org_id: u64) -> Result<String, TenancyError> {
        self.require_organization(org_id).await?;
        self.insert_key(org_id).await
    }

    async fn insert_key(&self, org_id: u64) -> Result<String, TenancyError> {
        let api_key = random_alphanumeric(API_KEY_LENGTH);
        self.write_key_row(
            &hash_api_key(&api_key),
            org_id,
            false,
            epoch_millis() as u64,
        )
        .await?;
        Ok(api_key)
    }

    async fn write_key_row(
        &self,
        key_hash: &str,
        org_id: u64,
        revoked: bool,
        version: u64,
    ) -> Result<(), TenancyError> {
        self.store
            .run(|client| {
                client
                    .query(
                        "INSERT INTO api_keys (key_hash, org_id, revoked, version, created_at) \
                         VALUES (?, ?, ?, ?, now())",
                    )
                    .bind(key_hash)
                    .bind(org_id)
                    .bind(u8::from(revoked))
                    .bind(version)
                    .execute()
            })
            .await?;
        Ok(())
    }

    /// Revokes a key; unknown keys are an error, revoking twice is not.
    pub async fn revoke_key(&self, api_key: &str) -> Result<(), TenancyError> {
        let key_hash = hash_api_key(api_key);
        let current: Option<KeyState> = self
            .store
            .run(|client| {
                self.store
                    .read_your_writes(client.query(
                        "SELECT argMax(org_id, version) AS key_org, argMax(revoked, version) AS is_revoked, \
                         max(version) AS latest_version FROM api_keys WHERE key_hash = ? GROUP BY key_hash",
                    ))
                    .bind(&key_hash)
                    .fetch_optional()
            })
            .await?;
        let Some(current) = current else {
            return Err(TenancyError::NotFound("unknown API key".into()));
        };
        if current.is_revoked == 1 {
            return Ok(());
        }
        let version = (epoch_millis() as u64).max(current.latest_version + 1);
        self.write_key_row(&key_hash, current.key_org, true, version)
            .await
    }

    /// Creates a `web` project; `project_key` is drawn at random unless given.
    pub async fn create_project(
        &self,
        org_id: u64,
        name: &str,
        project_key: Option<&str>,
    ) -> Result<Project, TenancyError> {
        self.create_project_of(NewProject {
            org_id,
            name,
            platform: Platform::Web,
            project_key,
            max_projects_of_org: None,
        })
        .await
    }

    /// Creates a project (module header): checks, an id claimed, the platform, then
    /// the project's row.
    pub async fn create_project_of(&self, new: NewProject<'_>) -> Result<Project, TenancyError> {
        validate_project_name(new.name)?;
        let project_key = match new.project_key {
            Some(key) if !is_valid_project_key(key) => {
                return Err(TenancyError::InvalidInput(format!(
                    "project key must be {PROJECT_KEY_LENGTH} letters and digits"
                )))
            }
            Some(key) => key.to_owned(),
            None => random_alphanumeric(PROJECT_KEY_LENGTH),
        };
        self.require_organization(new.org_id).await?;
        if let Some(limit) = new.max_projects_of_org {
            let owned: Count = self
                .store
                .run(|client| {
                    self.store
                        .read_your_writes(
                            client.query("SELECT count() AS count FROM projects WHERE org_id = ?"),
                        )
                        .bind(new.org_id)
                        .fetch_one()
                })
                .await?;
            if owned.count >= limit {
                return Err(TenancyError::TooManyProjects { limit });
            }
        }
        let taken: Count = self
            .store
            .run(|client| {
                self.store
                    .read_your_writes(
                        client.query("SELECT count() AS count FROM projects WHERE project_key = ?"),
                    )
                    .bind(&project_key)
                    .fetch_one()
            })
            .await?;
        if taken.count > 0 {
            return Err(TenancyError::Conflict(
                "that project key is already taken".into(),
            ));
        }
        let project_id = self.claim_project_id(&project_key).await?;
        self.store
            .run(|client| {
                client
                    .query("INSERT INTO project_platforms (project_id, platform) VALUES (?, ?)")
                    .bind(project_id)
                    .bind(new.platform.as_str())
                    .execute()
            })
            .await?;
        self.store
            .run(|client| {
                client
                    .query(
                        "INSERT INTO projects (project_id, project_key, org_id, name, created_at) \
                         VALUES (?, ?, ?, ?, now())",
                    )
                    .bind(project_id)
                    .bind(&project_key)
                    .bind(new.org_id)
                    .bind(new.name)
                    .execute()
            })
            .await?;
        Ok(Project {
            project_id,
            project_key,
            org_id: new.org_id,
            name: new.name.to_owned(),
        })
    }

    /// An id for the project `project_key`, held by no other project (module header):
    /// the next after every id used or claimed, claimed, and kept when the claim is
    /// the only one of that id. After a lost claim the next candidate skips ahead by a
    /// random few, so creators that collided spread out.
    async fn claim_project_id(&self, project_key: &str) -> Result<u32, TenancyError> {
        for attempt in 0..MAX_ID_CLAIMS {
            let used: MaxId = self
                .store
                .run(|client| {
                    self.store
                        .read_your_writes(client.query(
                            "SELECT toUInt64(max(project_id)) AS max_id FROM (SELECT project_id \
                             FROM projects UNION ALL SELECT project_id FROM project_id_claims)",
                        ))
                        .fetch_one()
                })
                .await?;
            let spread = if attempt == 0 {
                0
            } else {
                rand::rngs::OsRng.gen_range(0..4 * u64::from(attempt))
            };
            let candidate = u32::try_from(used.max_id + 1 + spread)
                .map_err(|_| TenancyError::Conflict("no project ids left".into()))?;
            self.store
                .run(|client| {
                    client
                        .query(
                            "INSERT INTO project_id_claims (project_id, project_key, claimed_at) \
                             VALUES (?, ?, now())",
                        )
                        .bind(candidate)
                        .bind(project_key)
                        .execute()
                })
                .await?;
            let claims: Vec<ClaimKey> = self
                .store
                .run(|client| {
                    self.store
                        .read_your_writes(client.query(
                            "SELECT project_key FROM project_id_claims WHERE project_id = ? \
                             UNION ALL SELECT project_key FROM projects WHERE project_id = ?",
                        ))
                        .bind(candidate)
                        .bind(candidate)
                        .fetch_all()
                })
                .await?;
            if claims.iter().all(|claim| claim.project_key == project_key) {
                return Ok(candidate);
            }
            tracing::info!(candidate, attempt, "project id claimed by another creator");
        }
        Err(TenancyError::Conflict(
            "project ids are contended, try again".into(),
        ))
    }

    /// The project `project_key` of `org_id`, with its platform; `None` for an unknown
    /// key and for another organization's project alike.
    pub async fn project_of_org(
        &self,
        org_id: u64,
        project_key: &str,
    ) -> Result<Option<ProjectDetails>, TenancyError> {
        let project: Option<Project> = self
            .store
            .run(|client| {
                self.store
                    .read_your_writes(client.query(
                        "SELECT ?fields FROM projects FINAL WHERE project_key = ? AND org_id = ? \
                         ORDER BY project_id LIMIT 1",
                    ))
                    .bind(project_key)
                    .bind(org_id)
                    .fetch_optional()
            })
            .await?;
        let Some(project) = project else {
            return Ok(None);
        };
        let stored: Option<StoredPlatform> = self
            .store
            .run(|client| {
                self.store
                    .read_your_writes(client.query(
                        "SELECT platform FROM project_platforms FINAL WHERE project_id = ? LIMIT 1",
                    ))
                    .bind(project.project_id)
                    .fetch_optional()
            })
            .await?;
        let platform = stored.map_or(Platform::Web, |stored| {
            Platform::from_stored(&stored.platform)
        });
        Ok(Some(ProjectDetails { project, platform }))
    }

    /// Projects, ordered by id, optionally of one organization.
    pub async fn list_projects(&self, org_id: Option<u64>) -> Result<Vec<Project>, TenancyError> {
        Ok(self
            .store
            .run(|client| {
                match org_id {
                    Some(org_id) => client
                        .query("SELECT ?fields FROM projects FINAL WHERE org_id = ? ORDER BY project_id")
                        .bind(org_id),
                    None => client.query("SELECT ?fields FROM projects FINAL ORDER BY project_id"),
                }
                .fetch_all::<Project>()
            })
            .await?)
    }

    /// Every key that is not revoked (newest row per hash), with every acknowledged
    /// revocation seen, also on a cluster whose ZooKeeper is down (`key_reads`).
    pub async fn active_keys(&self) -> Result<Vec<ActiveKey>, TenancyError> {
        Ok(crate::key_reads::active_keys(self.store).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_alphanumeric_and_hashed_as_hex_sha256() {
        let key = random_alphanumeric(API_KEY_LENGTH);
        assert_eq!(key.len(), API_KEY_LENGTH);
        assert!(key.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(key, random_alphanumeric(API_KEY_LENGTH));
        assert_eq!(
            hash_api_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn platforms_are_web_or_ios_and_web_by_default() {
        assert_eq!(Platform::parse("web"), Some(Platform::Web));
        assert_eq!(Platform::parse("ios"), Some(Platform::Ios));
        for unknown in ["", "Web", "android", " web"] {
            assert_eq!(Platform::parse(unknown), None, "{unknown}");
        }
        assert_eq!(Platform::from_stored(""), Platform::Web);
        assert_eq!(Platform::Ios.as_str(), "ios");
    }

    #[test]
    fn project_names_are_one_to_two_hundred_bytes_not_blank() {
        let field_of = |name: &str| match validate_project_name(name) {
            Ok(()) => None,
            Err(TenancyError::InvalidField { field, .. }) => Some(field),
            Err(other) => panic!("{other}"),
        };
        assert_eq!(field_of("web"), None);
        assert_eq!(field_of(&"é".repeat(100)), None);
        assert_eq!(field_of(&"x".repeat(201)), Some("name"));
        assert_eq!(field_of(""), Some("name"));
        assert_eq!(field_of("  "), Some("name"));
    }

    #[test]
    fn project_keys_are_twenty_letters_and_digits() {
        assert!(is_valid_project_key("3sWXSsqHgSKnE87YkNJK"));
        assert!(!is_valid_project_key("3sWXSsqHgSKnE87YkNJ"));
        assert!(!is_valid_project_key("3sWXSsqHgSKnE87YkNJ-"));
    }
}
