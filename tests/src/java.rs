//! The official Java client suite (`tests/java`): built with Maven on first use.
//!
//! `tests/java` is a Maven project around `org.apache.rocketmq:rocketmq-client-java` (from
//! Maven Central, unmodified). `mvn compile` leaves everything the scenarios need under
//! `tests/java/target` (gitignored): the classes in `target/classes` and the client jar in
//! `target/lib`. After a successful build the harness writes `target/rocketlog-build.stamp`;
//! while the stamp is newer than every input (`pom.xml` and everything under `src/`) the build
//! is up to date and Maven is not run again. `tests/java/prepare.sh`, which CI runs before the
//! tests, builds with the same command and writes the same stamp.
//!
//! A missing JDK or Maven, or a failed build, is returned as a readable error: the tests fail
//! on it, they never skip. Tests of one process share one preparation (a `OnceLock`).

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};

use crate::process;

/// The scenarios' entry point: `Main <scenario> <host:port> <suffix>`.
pub const MAIN_CLASS: &str = "org.rocketlog.compat.Main";
/// Oldest Java the project compiles for (`maven.compiler.release` in `pom.xml`).
pub const MIN_JAVA: u32 = 17;
/// Written after a successful build; its mtime dates the build.
pub const STAMP_FILE: &str = "rocketlog-build.stamp";
/// The build, in the project directory; `prepare.sh` runs the same.
pub const MAVEN_ARGS: &[&str] = &["--batch-mode", "--quiet", "compile"];
/// Quick JVM start-up for short client programs: client compiler only, class-data sharing,
/// the serial collector, no perf-data file.
pub const JVM_FLAGS: &[&str] = &[
    "-XX:TieredStopAtLevel=1",
    "-Xshare:auto",
    "-XX:+UseSerialGC",
    "-XX:-UsePerfData",
    "-Xmx512m",
];
/// Resolving from Maven Central and compiling, on a cold machine.
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// `tests/java`.
pub fn project_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("java")
}

/// A built project: the `java` to run and the classpath of the scenarios.
#[derive(Debug)]
struct Built {
    java: PathBuf,
    classpath: OsString,
}

/// The command running Java scenario `scenario`; the caller appends `<host:port> <suffix>`
/// (see [`crate::run_program_scenario`]). Builds the project first if needed (once per
/// process); fails with the reason when there is no usable JDK or Maven or the build fails.
pub fn scenario_command(scenario: &str) -> Result<Command, String> {
    let built = built()?;
    let mut cmd = Command::new(&built.java);
    cmd.current_dir(project_dir())
        .args(JVM_FLAGS)
        .arg("-cp")
        .arg(&built.classpath)
        .arg(MAIN_CLASS)
        .arg(scenario);
    Ok(cmd)
}

fn built() -> Result<&'static Built, String> {
    static READY: OnceLock<Result<Built, String>> = OnceLock::new();
    READY
        .get_or_init(|| prepare(&project_dir()).map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| {
            format!(
                "the Java client suite ({}) is not usable (it needs a JDK {MIN_JAVA}+ and Maven 3; \
                 `bash tests/java/prepare.sh` builds it): {e}",
                project_dir().display()
            )
        })
}

/// `$JAVA_HOME/bin/java` if there is one, else `java` from `PATH`.
fn java_binary() -> PathBuf {
    if let Some(home) = std::env::var_os("JAVA_HOME").filter(|h| !h.is_empty()) {
        let java = Path::new(&home).join("bin").join("java");
        if java.is_file() {
            return java;
        }
    }
    PathBuf::from("java")
}

/// Runs `cmd`; its output when it succeeded, else an error with everything it printed.
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
    Ok(format!("{}{}", done.stdout, done.stderr))
}

/// The major version in `java -version` output (`openjdk version "17.0.15" ...`, `"1.8.0_402"`).
fn java_major(version_output: &str) -> Option<u32> {
    let quoted = version_output.split('"').nth(1)?;
    let mut parts = quoted.split(['.', '-', '+', '_']);
    let first: u32 = parts.next()?.parse().ok()?;
    if first == 1 {
        parts.next()?.parse().ok()
    } else {
        Some(first)
    }
}

fn modified(path: &Path) -> anyhow::Result<SystemTime> {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .with_context(|| format!("reading the mtime of {}", path.display()))
}

/// The newest mtime of `path` and, for a directory, everything below it.
fn newest(path: &Path) -> anyhow::Result<SystemTime> {
    let mut latest = modified(path)?;
    if path.is_dir() {
        let entries = fs::read_dir(path).with_context(|| format!("listing {}", path.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", path.display()))?;
            latest = latest.max(newest(&entry.path())?);
        }
    }
    Ok(latest)
}

/// The built classes and the client jar are there and the stamp is newer than every input.
fn up_to_date(dir: &Path) -> bool {
    let target = dir.join("target");
    let built = target
        .join("classes/org/rocketlog/compat/Main.class")
        .is_file()
        && client_jar(&target.join("lib")).is_some();
    let Ok(stamp) = modified(&target.join(STAMP_FILE)) else {
        return false;
    };
    let inputs = newest(&dir.join("pom.xml"))
        .and_then(|pom| Ok(pom.max(newest(&dir.join("src"))?)))
        .ok();
    built && inputs.is_some_and(|newest_input| newest_input < stamp)
}

fn client_jar(lib: &Path) -> Option<PathBuf> {
    fs::read_dir(lib)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("rocketmq-client-java-") && n.ends_with(".jar"))
        })
}

fn prepare(dir: &Path) -> anyhow::Result<Built> {
    let java = java_binary();
    let version = run_step(
        &format!(
            "running `{} -version` (is a JDK installed?)",
            java.display()
        ),
        Command::new(&java).arg("-version"),
        CHECK_TIMEOUT,
    )?;
    match java_major(&version) {
        Some(major) if major >= MIN_JAVA => {}
        _ => bail!(
            "{} is not Java {MIN_JAVA} or newer:\n{version}",
            java.display()
        ),
    }
    let target = dir.join("target");
    if !up_to_date(dir) {
        run_step(
            "running `mvn -v` (is Maven installed?)",
            Command::new("mvn").arg("-v"),
            CHECK_TIMEOUT,
        )?;
        run_step(
            &format!(
                "building {} with Maven (resolves rocketmq-client-java from Maven Central)",
                dir.display()
            ),
            Command::new("mvn").current_dir(dir).args(MAVEN_ARGS),
            BUILD_TIMEOUT,
        )?;
        if !target
            .join("classes/org/rocketlog/compat/Main.class")
            .is_file()
        {
            bail!(
                "the Maven build left no {MAIN_CLASS} in {}",
                target.display()
            );
        }
        if client_jar(&target.join("lib")).is_none() {
            bail!(
                "the Maven build copied no rocketmq-client-java jar to {}",
                target.join("lib").display()
            );
        }
        let stamp = target.join(STAMP_FILE);
        fs::write(&stamp, "tests/java built by the rocketlog test harness\n")
            .with_context(|| format!("writing {}", stamp.display()))?;
    }
    let mut classpath = OsString::from(target.join("classes"));
    classpath.push(":");
    // The JVM expands `dir/*` to the jars in it.
    classpath.push(target.join("lib").join("*"));
    Ok(Built { java, classpath })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_major_versions() {
        assert_eq!(
            java_major("openjdk version \"17.0.15\" 2025-04-15\nOpenJDK Runtime"),
            Some(17)
        );
        assert_eq!(java_major("java version \"1.8.0_402\""), Some(8));
        assert_eq!(java_major("openjdk version \"21\" 2023-09-19"), Some(21));
        assert_eq!(java_major("openjdk version \"22-ea\" 2024-03-19"), Some(22));
        assert_eq!(java_major("no version here"), None);
    }
}
