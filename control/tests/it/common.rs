//! The control tests' own helper: `sessions-admin` as a child process.

use std::process::Command;

use serde_json::Value;

/// `sessions-admin` against one test database, its settings given as flags.
pub struct Admin<'a> {
    pub settings: &'a sessions_shared::config::ClickHouseSettings,
}

impl Admin<'_> {
    /// Runs `sessions-admin` with flags; returns (exit success, stdout JSON or Null, stderr).
    pub fn run(&self, args: &[&str]) -> (bool, Value, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_sessions-admin"))
            .env_remove("RUST_LOG")
            .args(self.settings.to_args())
            .args(args)
            .output()
            .expect("sessions-admin runs");
        let stdout = String::from_utf8(output.stdout).unwrap();
        let json = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
        (
            output.status.success(),
            json,
            String::from_utf8(output.stderr).unwrap(),
        )
    }

    pub fn ok(&self, args: &[&str]) -> Value {
        let (success, json, stderr) = self.run(args);
        assert!(success, "{args:?}: {stderr}");
        json
    }

    pub fn fails(&self, args: &[&str]) -> String {
        let (success, json, stderr) = self.run(args);
        assert!(!success, "{args:?} should fail, printed {json}");
        assert_eq!(json, Value::Null, "nothing on stdout for {args:?}");
        assert!(!stderr.trim().is_empty(), "{args:?}: a reason on stderr");
        stderr
    }
}
