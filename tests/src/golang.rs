//! The official Go client suite (`tests/go`): built with `go build` on first use.
//!
//! `tests/go` is a Go module around `github.com/apache/rocketmq-clients/golang/v5` (pinned in
//! `go.mod`/`go.sum`, unmodified); its one program runs the scenario named by its first
//! argument. The harness builds it once per process with [`GO_BUILD_ARGS`] into
//! `tests/go/target` (gitignored). `go build` is incremental, so a build that is up to date
//! only checks and relinks nothing; `tests/go/prepare.sh`, which CI runs before the tests,
//! builds with the same command, so the tests find it up to date.
//!
//! A missing Go toolchain or a failed build is returned as a readable error: the tests fail on
//! it, they never skip. Tests of one process share one build (a `OnceLock`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::process;

/// The built program, relative to `tests/go`.
pub const BINARY: &str = "target/rocketlog-go-compat";
/// The build, in the module directory; `prepare.sh` runs the same.
pub const GO_BUILD_ARGS: &[&str] = &["build", "-o", BINARY, "."];
/// `go.sum` is the pin: a build never rewrites the module files. No VCS stamp: it would
/// change the binary whenever anything in the checkout changes, forcing a relink.
pub const GOFLAGS: &str = "-mod=readonly -buildvcs=false";
/// Variables through which the caller's environment would change what the client does by
/// default (TLS, where and how it logs); the scenarios run without them.
const CLIENT_ENV: &[&str] = &[
    "rocketmq.client.enableSsl",
    "rocketmq.client.logRoot",
    "rocketmq.client.logFileName",
    "rocketmq.client.logLevel",
    "mq.consoleAppender.enabled",
];
/// Downloading the modules and compiling, on a cold machine.
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// `tests/go`.
pub fn project_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("go")
}

/// The command running Go scenario `scenario`; the caller appends `<host:port> <suffix>` (see
/// [`crate::run_program_scenario`]). Builds the program first if needed (once per process);
/// fails with the reason when there is no usable Go toolchain or the build fails.
pub fn scenario_command(scenario: &str) -> Result<Command, String> {
    let binary = built()?;
    let mut cmd = Command::new(binary);
    cmd.current_dir(project_dir()).arg(scenario);
    for name in CLIENT_ENV {
        cmd.env_remove(name);
    }
    Ok(cmd)
}

fn built() -> Result<&'static Path, String> {
    static READY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    READY
        .get_or_init(|| prepare(&project_dir()).map_err(|e| format!("{e:#}")))
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(|e| {
            format!(
                "the Go client suite ({}) is not usable (it needs the Go toolchain, `go`, on \
                 PATH and the Go module proxy; `bash tests/go/prepare.sh` builds it): {e}",
                project_dir().display()
            )
        })
}

/// Runs `cmd`; its stdout when it succeeded, else an error with everything it printed.
fn run_step(what: &str, cmd: &mut Command, timeout: Duration) -> anyhow::Result<String> {
    let done = process::run(cmd, timeout).with_context(|| what.to_owned())?;
    if !done.success() {
        bail!(
            "{what} failed ({}): {cmd:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            done.describe(),
            done.stdout,
            done.stderr
        );
    }
    Ok(done.stdout)
}

/// The version in `go version` output (`go version go1.26.8 linux/amd64` → `go1.26.8`).
fn go_version(output: &str) -> Option<&str> {
    output
        .split_whitespace()
        .find(|w| w.starts_with("go1") || w.starts_with("devel"))
}

/// The build's cache and module directories: what `go env` says (the defaults, under the
/// caller's home), else directories under `tests/go/target` when `go` finds no home to put
/// them in.
fn go_dirs(dir: &Path) -> anyhow::Result<Vec<(&'static str, PathBuf)>> {
    let out = run_step(
        "running `go env GOCACHE GOPATH`",
        Command::new("go")
            .current_dir(dir)
            .args(["env", "GOCACHE", "GOPATH"]),
        CHECK_TIMEOUT,
    )?;
    let mut lines = out.lines().map(str::trim);
    let mut pick = |name: &'static str, fallback: &str| {
        let value = lines.next().filter(|v| !v.is_empty() && *v != "off");
        (
            name,
            value.map_or_else(|| dir.join("target").join(fallback), PathBuf::from),
        )
    };
    Ok(vec![pick("GOCACHE", "gocache"), pick("GOPATH", "gopath")])
}

fn prepare(dir: &Path) -> anyhow::Result<PathBuf> {
    let version = run_step(
        "running `go version` (is the Go toolchain installed and on PATH?)",
        Command::new("go").arg("version"),
        CHECK_TIMEOUT,
    )?;
    if go_version(&version).is_none() {
        bail!("`go version` printed no version: {version}");
    }
    let dirs = go_dirs(dir)?;
    run_step(
        &format!(
            "building {} with `go {}` (downloads the pinned modules through the Go module proxy)",
            dir.display(),
            GO_BUILD_ARGS.join(" ")
        ),
        Command::new("go")
            .current_dir(dir)
            .args(GO_BUILD_ARGS)
            .env("GOFLAGS", GOFLAGS)
            // go.mod names the oldest Go that builds the module; never fetch another toolchain.
            .env("GOTOOLCHAIN", "local")
            .envs(dirs),
        BUILD_TIMEOUT,
    )?;
    let binary = dir.join(BINARY);
    if !binary.is_file() {
        bail!("`go build` left no {}", binary.display());
    }
    Ok(binary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_versions() {
        assert_eq!(
            go_version("go version go1.26.8 linux/amd64\n"),
            Some("go1.26.8")
        );
        assert_eq!(
            go_version("go version devel go1.27-abc linux/arm64"),
            Some("devel")
        );
        assert_eq!(go_version("bash: go: command not found"), None);
    }
}
