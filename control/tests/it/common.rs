//! The control tests' own helper: `sessions-admin` as a child process.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

/// `sessions-admin` against one test database, its settings given as flags.
pub struct Admin<'a> {
    pub settings: &'a sessions_shared::config::ClickHouseSettings,
}

impl Admin<'_> {
    /// Runs `sessions-admin` with flags; returns (exit success, stdout JSON or Null, stderr).
    pub fn run(&self, args: &[&str]) -> (bool, Value, String) {
        self.run_with_input(args, "")
    }

    /// [`Admin::run`] with `input` on its standard input.
    pub fn run_with_input(&self, args: &[&str], input: &str) -> (bool, Value, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sessions-admin"))
            .env_remove("RUST_LOG")
            .env_remove("API_KEY")
            .args(self.settings.to_args())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sessions-admin runs");
        child
            .stdin
            .take()
            .expect("stdin piped")
            .write_all(input.as_bytes())
            .expect("input written");
        let output = child.wait_with_output().expect("sessions-admin runs");
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
        self.fails_with_input(args, "")
    }

    pub fn fails_with_input(&self, args: &[&str], input: &str) -> String {
        let (success, json, stderr) = self.run_with_input(args, input);
        assert!(!success, "{args:?} should fail, printed {json}");
        assert_eq!(json, Value::Null, "nothing on stdout for {args:?}");
        assert!(!stderr.trim().is_empty(), "{args:?}: a reason on stderr");
        stderr
    }
}
