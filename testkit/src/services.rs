//! The fault tests' hands on the shared local services: `scripts/services.sh`, named
//! by `SESSIONS_SERVICES_SCRIPT` (which `scripts/test.sh` sets), stops, SIGKILLs and
//! starts ClickHouse, the Kafka cluster's brokers, ZooKeeper and the cluster's nodes.
//! Without it those tests fail, unless opted out ([`crate::require::services_script`]).
//!
//! Every other test uses the same services, so a test that calls this holds an
//! exclusive turn ([`crate::serial::exclusive`]), and starts again what it stopped
//! with a [`StartOnDrop`] taken after its turn (so the restart runs before the next
//! test gets one, even when the test fails midway).

use std::process::Command;

/// The services script, when the environment names one.
pub fn script() -> Option<String> {
    std::env::var("SESSIONS_SERVICES_SCRIPT").ok()
}

/// Runs `services.sh ACTION SERVICE...`; whether it succeeded. Panics without the
/// script (a test takes it through [`crate::require::services_script`] first).
pub fn run(action: &str, services: &[&str]) -> bool {
    let script = script().expect(
        "SESSIONS_SERVICES_SCRIPT is unset: take it through require::services_script first",
    );
    Command::new("bash")
        .arg(&script)
        .arg(action)
        .args(services)
        .status()
        .is_ok_and(|status| status.success())
}

/// `services.sh ACTION SERVICE`, which must succeed (start, stop, restart, kill9).
pub fn service(action: &str, service: &str) {
    assert!(run(action, &[service]), "services.sh {action} {service}");
}

/// Starts the services again when dropped. A failure to start them panics, unless the
/// test is already failing (a panic while unwinding would abort every test of the
/// binary): then it is only printed.
#[must_use = "the services are started when this guard is dropped"]
pub struct StartOnDrop {
    services: Vec<&'static str>,
}

impl StartOnDrop {
    /// A guard for `services` (`clickhouse`, `kafka-cluster`, `zookeeper`, nodes...).
    pub fn new(services: &[&'static str]) -> StartOnDrop {
        StartOnDrop {
            services: services.to_vec(),
        }
    }
}

impl Drop for StartOnDrop {
    fn drop(&mut self) {
        if run("start", &self.services) {
            return;
        }
        let message = format!("services.sh start {} failed", self.services.join(" "));
        if std::thread::panicking() {
            eprintln!("{message}");
        } else {
            panic!("{message}");
        }
    }
}
