//! Running one official-client scenario script (`tests/python/*.py`) against a cluster.
//!
//! A script gets the broker's client address and a suffix for its topic and group names, plus
//! the timings the broker was tuned with ([`Tuning`]). It prints its steps and a final
//! `PASS`/`FAIL` line and exits 0 only if the scenario held. Its output, the Python client's
//! log lines and the servers' logs are shown only when it fails.

use std::process::Command;
use std::time::Duration;

use rocketlog_broker::BrokerConfig;

use crate::cluster::Cluster;
use crate::process::{self, Finished};
use crate::venv;

/// Set to print the client's log and the server logs of passing scenarios too (with
/// `--nocapture`).
pub const SHOW_ALL_ENV: &str = "ROCKETLOG_TEST_SHOW_ALL";
/// The script's own hard limit (it reports where it was stuck).
const SCRIPT_TIMEOUT_SECS: u64 = 90;
/// The harness kills a script that outlives its own limit by this much.
const KILL_AFTER: Duration = Duration::from_secs(SCRIPT_TIMEOUT_SECS + 30);

/// Broker timings a scenario relies on, applied to the broker and passed to the script alike.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Invisible duration the scripts ask for on receive (whole seconds, as the Python client
    /// sends it); the broker's minimum is set just below it.
    pub invisible_secs: u64,
    /// Long-polling wait of the simple consumers; also the broker's longest wait + 1 s.
    pub await_secs: u64,
    /// Deliveries before a message is dead-lettered.
    pub max_attempts: u32,
}

impl Default for Tuning {
    /// Short timings so a scenario finishes in seconds: 2 s invisible, 2 s long polls, the
    /// proxy's 17 attempts.
    fn default() -> Self {
        Tuning {
            invisible_secs: 2,
            await_secs: 2,
            max_attempts: 17,
        }
    }
}

impl Tuning {
    /// Sets the broker's limits to match.
    pub fn apply(&self, config: &mut BrokerConfig) {
        config.receive.min_invisible_duration_ms = 1_000;
        config.receive.min_long_polling_ms = 1_000;
        config.receive.max_long_polling_ms = (self.await_secs + 1) * 1_000;
        config.receive.max_delivery_attempts = self.max_attempts;
    }

    /// The environment a scenario script reads its timings from.
    pub fn script_env(&self, config_max_body: usize) -> Vec<(&'static str, String)> {
        vec![
            (
                "ROCKETLOG_SCENARIO_TIMEOUT",
                SCRIPT_TIMEOUT_SECS.to_string(),
            ),
            ("ROCKETLOG_INVISIBLE_SECS", self.invisible_secs.to_string()),
            ("ROCKETLOG_AWAIT_SECS", self.await_secs.to_string()),
            ("ROCKETLOG_MAX_ATTEMPTS", self.max_attempts.to_string()),
            ("ROCKETLOG_MAX_BODY_BYTES", config_max_body.to_string()),
        ]
    }
}

/// A suffix for topic and group names, unique per scenario and process.
pub fn unique_suffix(scenario: &str) -> String {
    format!("{}-{}", scenario.replace('_', "-"), std::process::id())
}

fn section(title: &str, body: &str) -> String {
    let body = body.trim_end();
    if body.is_empty() {
        format!("----- {title}: (empty)\n")
    } else {
        format!("----- {title} -----\n{body}\n")
    }
}

/// Panics with everything needed to diagnose a failed scenario.
fn fail(script: &str, why: &str, run: Option<&Finished>, target: &dyn Target) -> ! {
    let mut report = format!("scenario {script} FAILED: {why}\n");
    if let Some(run) = run {
        report.push_str(&section("script stdout (steps and verdict)", &run.stdout));
        report.push_str(&section(
            "script stderr (tracebacks, Python client log)",
            &run.stderr,
        ));
    }
    report.push_str(&section("server logs", &target.logs()));
    panic!("{report}");
}

/// What a scenario runs against: a broker's client address and how to show its logs.
trait Target {
    fn address(&self) -> String;
    fn max_body(&self) -> usize;
    fn logs(&self) -> String;
}

impl Target for Cluster {
    fn address(&self) -> String {
        self.client_address().to_string()
    }
    fn max_body(&self) -> usize {
        self.config().max_body_size
    }
    fn logs(&self) -> String {
        Cluster::logs(self)
    }
}

/// A broker running elsewhere (another process).
struct Remote<'a> {
    address: &'a str,
    max_body: usize,
    logs: &'a dyn Fn() -> String,
}

impl Target for Remote<'_> {
    fn address(&self) -> String {
        self.address.to_owned()
    }
    fn max_body(&self) -> usize {
        self.max_body
    }
    fn logs(&self) -> String {
        (self.logs)()
    }
}

/// The verdict line a passing script prints last.
fn verdict(stdout: &str) -> Option<&str> {
    stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("PASS ") || l.starts_with("FAIL "))
}

/// Runs `tests/python/<script>` against `cluster`; panics with the script's output and the
/// server logs unless it exits 0 with a `PASS` line.
pub fn run_scenario(cluster: &Cluster, script: &str, suffix: &str, tuning: &Tuning) {
    run_against(cluster, script, suffix, tuning);
}

/// [`run_scenario`] against a broker at `address` (for example a `rocketlog` process) whose
/// `max_body_size` is `max_body`; `logs` gives its logs for the failure report.
pub fn run_scenario_at(
    address: &str,
    max_body: usize,
    script: &str,
    suffix: &str,
    tuning: &Tuning,
    logs: &dyn Fn() -> String,
) {
    let target = Remote {
        address,
        max_body,
        logs,
    };
    run_against(&target, script, suffix, tuning);
}

/// Runs one scenario of another official client against `cluster`: `cmd` is the prepared
/// program (a JVM or a Go binary with its scenario name); the harness appends the broker's
/// client address and `suffix`, adds the tuning environment and a private `HOME` (clients log
/// under it), and judges the run as for the Python scripts: exit 0 with a last `PASS` line.
/// `name` labels the scenario in the report.
pub fn run_program_scenario(
    cluster: &Cluster,
    name: &str,
    mut cmd: Command,
    suffix: &str,
    tuning: &Tuning,
) {
    let home = match tempfile::Builder::new()
        .prefix("rocketlog-clienthome-")
        .tempdir()
    {
        Ok(h) => h,
        Err(e) => fail(
            name,
            &format!("cannot create a HOME for the client: {e}"),
            None,
            cluster,
        ),
    };
    cmd.arg(cluster.address())
        .arg(suffix)
        .env("HOME", home.path())
        .envs(tuning.script_env(cluster.max_body()));
    judge(cluster, name, &mut cmd);
}

fn run_against(cluster: &dyn Target, script: &str, suffix: &str, tuning: &Tuning) {
    let python = match venv::python() {
        Ok(p) => p,
        Err(e) => fail(
            script,
            &format!(
                "the Python virtualenv with the official client is not usable \
                 (set {} to reuse another one, {} to pick the interpreter):\n{e}",
                venv::VENV_ENV,
                venv::PYTHON_ENV
            ),
            None,
            cluster,
        ),
    };
    let dir = venv::scripts_dir();
    let home = match tempfile::Builder::new()
        .prefix("rocketlog-pyhome-")
        .tempdir()
    {
        Ok(h) => h,
        Err(e) => fail(
            script,
            &format!("cannot create a HOME for the client: {e}"),
            None,
            cluster,
        ),
    };
    let mut cmd = Command::new(python);
    cmd.current_dir(&dir)
        .arg("-u")
        .arg(dir.join(script))
        .arg(cluster.address())
        .arg(suffix)
        // The client logs under ~/logs; keep that out of the real home and apart per run.
        .env("HOME", home.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .envs(tuning.script_env(cluster.max_body()));
    judge(cluster, script, &mut cmd);
}

/// Runs a scenario program to its end and panics with its output and the server logs unless
/// it passed.
fn judge(cluster: &dyn Target, script: &str, cmd: &mut Command) {
    let run = match process::run(cmd, KILL_AFTER) {
        Ok(run) => run,
        Err(e) => fail(script, &format!("{e:#}"), None, cluster),
    };
    // Captured by the test harness: shown with `--nocapture` or when the test fails.
    println!("{}", section(&format!("{script} stdout"), &run.stdout));
    if std::env::var_os(SHOW_ALL_ENV).is_some() {
        println!("{}", section(&format!("{script} stderr"), &run.stderr));
        println!("{}", section("server logs", &cluster.logs()));
    }
    let passed = run.success() && verdict(&run.stdout).is_some_and(|l| l.starts_with("PASS "));
    if !passed {
        let why = verdict(&run.stdout).unwrap_or("the script printed no verdict");
        fail(
            script,
            &format!("{} ({})", why, run.describe()),
            Some(&run),
            cluster,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_is_the_last_pass_or_fail_line() {
        assert_eq!(verdict("step\nPASS x in 1.0s\n"), Some("PASS x in 1.0s"));
        assert_eq!(
            verdict("PASS early\nFAIL x: late\nshutting down\n"),
            Some("FAIL x: late")
        );
        assert_eq!(verdict("no verdict\n"), None);
    }

    #[test]
    fn tuning_reaches_the_broker_config() {
        let mut config = BrokerConfig::default();
        let tuning = Tuning {
            max_attempts: 3,
            ..Tuning::default()
        };
        tuning.apply(&mut config);
        assert_eq!(config.receive.max_delivery_attempts, 3);
        assert!(config.receive.min_invisible_duration_ms <= tuning.invisible_secs * 1000);
        assert!(config.receive.min_long_polling_ms <= tuning.await_secs * 1000);
        config.validate().unwrap();
    }
}
