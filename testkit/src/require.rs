//! What an integration test needs from outside its process, and what happens when that
//! is missing. `scripts/test.sh` provides everything: the local ClickHouse cluster
//! (`CLICKHOUSE_CLUSTER_URL`) and `scripts/services.sh` to stop and start the services
//! (`SESSIONS_SERVICES_SCRIPT`).
//!
//! Contract: a test never passes silently without what it exercises. A missing
//! requirement fails the test with a message that says how to provide it, unless the
//! developer opted out of that requirement by name in [`ALLOW_MISSING`]
//! (`SESSIONS_TESTS_ALLOW_MISSING=cluster,services`, either or both); then the test,
//! or the part of it that needs the requirement, is skipped and says so on stderr.
//! An unknown name in the opt-out fails every test that consults it, so a typo does
//! not pass for an opt-out. `scripts/test.sh` clears it.

use crate::clickhouse::{cluster_target, Target};

/// The opt-out: a comma-separated list of the [`Requirement`]s tests may go without.
pub const ALLOW_MISSING: &str = "SESSIONS_TESTS_ALLOW_MISSING";

/// Something a test needs that the environment may not provide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// The local ClickHouse cluster, its nodes listed in `CLICKHOUSE_CLUSTER_URL`.
    Cluster,
    /// `scripts/services.sh`, named by `SESSIONS_SERVICES_SCRIPT`, in charge of the
    /// services the tests use (the fault tests stop and start them through it).
    Services,
}

impl Requirement {
    const ALL: [Requirement; 2] = [Requirement::Cluster, Requirement::Services];

    /// Its name in [`ALLOW_MISSING`].
    pub fn name(self) -> &'static str {
        match self {
            Requirement::Cluster => "cluster",
            Requirement::Services => "services",
        }
    }

    fn how_to_provide(self) -> &'static str {
        match self {
            Requirement::Cluster => {
                "scripts/test.sh starts the local cluster and sets CLICKHOUSE_CLUSTER_URL \
                 (by hand: `scripts/services.sh start zookeeper`, then `start` the nodes \
                 `scripts/services.sh cluster-nodes` lists, and export \
                 CLICKHOUSE_CLUSTER_URL=$(scripts/services.sh cluster-urls))"
            }
            Requirement::Services => {
                "scripts/test.sh sets SESSIONS_SERVICES_SCRIPT to scripts/services.sh, \
                 which manages the services at the addresses the tests use (by hand: \
                 start them with it and export SESSIONS_SERVICES_SCRIPT=$PWD/scripts/services.sh)"
            }
        }
    }
}

/// Whether the opt-out's value `allowance` lets tests go without `requirement`; an
/// error names an entry that is no requirement.
fn allows(allowance: Option<&str>, requirement: Requirement) -> Result<bool, String> {
    let mut allowed = false;
    for entry in allowance.unwrap_or("").split(',').map(str::trim) {
        if entry.is_empty() {
            continue;
        }
        let Some(named) = Requirement::ALL.into_iter().find(|r| r.name() == entry) else {
            return Err(format!(
                "{ALLOW_MISSING} names {entry:?}, which is none of {}",
                Requirement::ALL.map(Requirement::name).join(", ")
            ));
        };
        allowed |= named == requirement;
    }
    Ok(allowed)
}

/// What a test does about `requirement` missing for the reason `why`: the failure's
/// message, or (opted out) the note that `skipped` is skipped.
fn verdict(
    allowance: Option<&str>,
    requirement: Requirement,
    why: &str,
    skipped: &str,
) -> Result<String, String> {
    let name = requirement.name();
    match allows(allowance, requirement)? {
        true => Ok(format!(
            "skipped: {skipped}, since {why} ({ALLOW_MISSING} names {name})"
        )),
        false => Err(format!(
            "{why}: {}. To skip {skipped} instead, set {ALLOW_MISSING}={name}",
            requirement.how_to_provide()
        )),
    }
}

/// Called when `requirement` is missing (`why`, e.g. "CLICKHOUSE_CLUSTER_URL is
/// unset"): fails the test with how to provide it, or, when [`ALLOW_MISSING`] names
/// it, prints that `skipped` (e.g. "this test", "the cluster engine") is skipped and
/// returns, leaving the caller to skip it.
#[track_caller]
pub fn missing(requirement: Requirement, why: &str, skipped: &str) {
    let allowance = std::env::var(ALLOW_MISSING).ok();
    match verdict(allowance.as_deref(), requirement, why, skipped) {
        Ok(note) => eprintln!("{note}"),
        Err(failure) => panic!("{failure}"),
    }
}

/// The local cluster; without one, fails the test or (opted out) returns `None` after
/// saying that `skipped` is skipped.
#[track_caller]
pub fn cluster(skipped: &str) -> Option<Target> {
    let target = cluster_target();
    if target.is_none() {
        missing(
            Requirement::Cluster,
            "CLICKHOUSE_CLUSTER_URL is unset",
            skipped,
        );
    }
    target
}

/// The services script; without one, fails the test or (opted out) returns `None`
/// after saying that `skipped` is skipped.
#[track_caller]
pub fn services_script(skipped: &str) -> Option<String> {
    let script = crate::services::script();
    if script.is_none() {
        missing(
            Requirement::Services,
            "SESSIONS_SERVICES_SCRIPT is unset",
            skipped,
        );
    }
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_opt_out_a_missing_requirement_fails_and_says_how_to_provide_it() {
        for allowance in [None, Some(""), Some(" , ")] {
            let failure = verdict(allowance, Requirement::Cluster, "unset", "this test")
                .expect_err("nothing opted out");
            assert!(failure.contains("scripts/test.sh starts the local cluster"));
            assert!(failure.contains("SESSIONS_TESTS_ALLOW_MISSING=cluster"));
        }
    }

    #[test]
    fn the_opt_out_skips_only_what_it_names() {
        let cluster_only = Some("cluster");
        assert!(verdict(cluster_only, Requirement::Cluster, "unset", "this test").is_ok());
        let failure = verdict(cluster_only, Requirement::Services, "unset", "this test");
        assert!(failure.unwrap_err().contains("SESSIONS_SERVICES_SCRIPT"));

        let both = Some(" services ,cluster");
        for requirement in Requirement::ALL {
            let note = verdict(both, requirement, "it is unset", "the cluster engine").unwrap();
            assert!(note.starts_with("skipped: the cluster engine, since it is unset"));
        }
    }

    #[test]
    fn an_unknown_name_in_the_opt_out_fails_even_beside_a_known_one() {
        let failure = verdict(
            Some("cluster,clustre"),
            Requirement::Cluster,
            "unset",
            "this test",
        )
        .unwrap_err();
        assert!(failure.contains("\"clustre\", which is none of cluster, services"));
    }
}
