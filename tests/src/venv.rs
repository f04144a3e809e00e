//! The Python virtualenv holding the official RocketMQ client the compatibility scenarios drive.
//!
//! Location: `$ROCKETLOG_TEST_VENV`, else `tests/.venv` (gitignored); independent of the cargo
//! target dir so every build reuses it. On first use it is created with `python3 -m venv`
//! (`$ROCKETLOG_TEST_PYTHON` picks another interpreter) and `tests/python/requirements.txt` is
//! installed from PyPI; a stamp file holding the installed requirements makes later runs skip
//! pip until the requirements change. Any failure is returned as a readable error: the tests
//! fail on it, they never skip.
//!
//! Tests of one process share one preparation (a `OnceLock`); two processes preparing the same
//! fresh venv at the same moment is not guarded against (CI prepares it once, before the tests).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::process;

/// Environment variable naming the virtualenv directory.
pub const VENV_ENV: &str = "ROCKETLOG_TEST_VENV";
/// Environment variable naming the interpreter that creates the virtualenv.
pub const PYTHON_ENV: &str = "ROCKETLOG_TEST_PYTHON";
/// Records which requirements the venv holds.
const STAMP_FILE: &str = ".rocketlog-requirements";
/// Creating the venv and installing from PyPI (about 40 MB of wheels).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// `tests/python`: the scenario scripts and their requirements.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// The command running `tests/python/<script>` against `endpoint` with the official client:
/// unbuffered, in its own home directory (returned: keep it alive while the script runs),
/// no bytecode files, the scenario's hard timeout `timeout_secs`. Callers add their phase's
/// environment. Panics when the virtualenv cannot be prepared.
pub fn script_command(
    script: &str,
    endpoint: &str,
    timeout_secs: u64,
) -> (std::process::Command, tempfile::TempDir) {
    let python = python().unwrap_or_else(|e| panic!("the Python virtualenv: {e}"));
    let dir = scripts_dir();
    let home = tempfile::tempdir().expect("home");
    let mut cmd = std::process::Command::new(python);
    cmd.current_dir(&dir)
        .arg("-u")
        .arg(dir.join(script))
        .arg(endpoint)
        .arg(format!("{}", std::process::id()))
        .env("HOME", home.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("ROCKETLOG_SCENARIO_TIMEOUT", timeout_secs.to_string());
    (cmd, home)
}

/// Where the virtualenv lives.
pub fn venv_dir() -> PathBuf {
    match std::env::var_os(VENV_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"),
    }
}

/// The virtualenv's interpreter, ready to import `rocketmq`; prepared once per process.
pub fn python() -> Result<&'static Path, String> {
    static READY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    READY
        .get_or_init(|| prepare(&venv_dir()).map_err(|e| format!("{e:#}")))
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(Clone::clone)
}

fn run_step(what: &str, cmd: &mut Command, timeout: Duration) -> anyhow::Result<()> {
    let done = process::run(cmd, timeout).with_context(|| what.to_owned())?;
    if !done.success() {
        bail!(
            "{what} failed ({}): {cmd:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            done.describe(),
            done.stdout,
            done.stderr
        );
    }
    Ok(())
}

fn prepare(venv: &Path) -> anyhow::Result<PathBuf> {
    let requirements_path = scripts_dir().join("requirements.txt");
    let requirements = fs::read_to_string(&requirements_path)
        .with_context(|| format!("reading {}", requirements_path.display()))?;
    let python = venv.join("bin").join("python");
    let stamp = venv.join(STAMP_FILE);
    if python.exists() && fs::read_to_string(&stamp).is_ok_and(|s| s == requirements) {
        return Ok(python);
    }
    if !python.exists() {
        let base = std::env::var(PYTHON_ENV).unwrap_or_else(|_| "python3".to_owned());
        run_step(
            &format!("creating the virtualenv {} with {base} (is python3 with the venv module installed?)", venv.display()),
            Command::new(&base).arg("-m").arg("venv").arg(venv),
            INSTALL_TIMEOUT,
        )?;
    }
    run_step(
        &format!(
            "installing {} into {} from PyPI",
            requirements_path.display(),
            venv.display()
        ),
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "-r",
            ])
            .arg(&requirements_path),
        INSTALL_TIMEOUT,
    )?;
    run_step(
        "importing the installed client and selenium",
        Command::new(&python).args(["-c", "import rocketmq, selenium"]),
        CHECK_TIMEOUT,
    )?;
    fs::write(&stamp, &requirements).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(python)
}
