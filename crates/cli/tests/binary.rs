//! The real `rocketlog` binary: starts on port 0, announces itself, answers admin commands,
//! and on SIGTERM flushes and exits 0 with its data intact for the next start.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_rocketlog");

struct Running {
    child: Child,
    client: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_standalone(data: &Path) -> Running {
    start_standalone_under(data, &[], &[])
}

/// Starts the binary through `wrapper` (a command and its arguments that end with the
/// program to run, such as `prlimit --nofile=256:256`).
/// `env`: extra environment, e.g. configuration as `ROCKETLOG_BROKER__...` variables.
fn start_standalone_under(data: &Path, wrapper: &[&str], env: &[(&str, &str)]) -> Running {
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    let mut child = command
        .args([
            "standalone",
            "--listen",
            "127.0.0.1:0",
            "--nameserver-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn rocketlog");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("no readiness line within 30 s");
    assert!(
        line.starts_with("rocketlog ready "),
        "unexpected first line {line:?}"
    );
    let client = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("client="))
        .expect("client= field")
        .to_owned();
    assert!(line.contains("nameserver=127.0.0.1:"), "{line}");
    Running { child, client }
}

fn admin(client: &str, args: &[&str]) -> Output {
    admin_as(client, None, args)
}

/// `rocketlog admin` signing with `credentials` (access key, secret key) from the environment.
fn admin_as(client: &str, credentials: Option<(&str, &str)>, args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(["admin", "--broker", client])
        .args(args)
        .env_remove("ROCKETLOG_ACCESS_KEY")
        .env_remove("ROCKETLOG_SECRET_KEY");
    if let Some((ak, sk)) = credentials {
        command
            .env("ROCKETLOG_ACCESS_KEY", ak)
            .env("ROCKETLOG_SECRET_KEY", sk);
    }
    command.output().expect("run admin")
}

fn stderr_of_failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "admin should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "admin failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sigterm(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit within 30 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn standalone_serves_admin_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = start_standalone(dir.path());

    let created = stdout_of(&admin(
        &server.client,
        &[
            "topic",
            "create",
            "Orders",
            "--queues",
            "4",
            "--type",
            "normal,fifo",
        ],
    ));
    assert!(created.contains("created: Orders"), "{created}");
    let listed = stdout_of(&admin(&server.client, &["topic", "list"]));
    assert!(
        listed.contains("Orders") && listed.contains("queues=4"),
        "{listed}"
    );

    // Bad input gets a clear error and a non-zero exit, not a crash.
    let bad = admin(&server.client, &["topic", "create", "bad/name"]);
    assert!(!bad.status.success());
    assert!(!String::from_utf8_lossy(&bad.stderr).is_empty());
    let missing = admin(
        &server.client,
        &["message", "id", "0123456789ABCDEF0123456789ABCDEF01"],
    );
    assert!(!missing.status.success());

    let status = sigterm(&mut server.child);
    assert!(status.success(), "exit status after SIGTERM: {status:?}");

    // The topic table survived the clean stop.
    let server = start_standalone(dir.path());
    let listed = stdout_of(&admin(&server.client, &["topic", "list"]));
    assert!(listed.contains("Orders"), "{listed}");
}

#[test]
fn invalid_configuration_is_reported() {
    let out = Command::new(BIN)
        .args([
            "standalone",
            "--listen",
            "127.0.0.1:0",
            "--nameserver-listen",
            "127.0.0.1:0",
        ])
        .env("ROCKETLOG_BROKER__FLUSH_MODE", "sometimes")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("configuration"), "{err}");
}

#[test]
fn failed_recovery_exits_non_zero_without_announcing_readiness() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The delayed-message state is the last thing recovered; a file where its directory
    // belongs makes recovery fail after the store and the consumption state opened.
    std::fs::write(dir.path().join("timer"), b"not a directory").expect("write");
    let out = Command::new(BIN)
        .args([
            "standalone",
            "--listen",
            "127.0.0.1:0",
            "--nameserver-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        !stdout.contains("rocketlog ready"),
        "announced readiness before failing: {stdout}"
    );
    assert!(
        stderr.contains("timer"),
        "the error names what failed: {stderr}"
    );
}

/// The soft limit of open files of a running process, from `/proc/<pid>/limits`.
fn soft_fd_limit(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no open-files limit in:\n{limits}"))
}

#[test]
fn the_soft_file_descriptor_limit_is_raised_to_the_hard_one_at_start() {
    let data = tempfile::tempdir().unwrap();
    let running = start_standalone_under(data.path(), &["prlimit", "--nofile=256:4096"], &[]);
    assert_eq!(soft_fd_limit(running.child.id()), 4096);
}

#[test]
fn half_open_connections_under_a_low_fd_limit_never_lock_new_clients_out() {
    use std::io::{Read, Write};
    let data = tempfile::tempdir().unwrap();
    let running = start_standalone_under(data.path(), &["prlimit", "--nofile=256:256"], &[]);
    // More half-open peers than the process has descriptors: each sends half the HTTP/2
    // client preface and stops.
    let mut peers: Vec<std::net::TcpStream> = (0..300)
        .map(|_| {
            let mut peer = std::net::TcpStream::connect(&running.client).unwrap();
            peer.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
            peer
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = admin(&running.client, &["stats"]);
        if out.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a new client was locked out: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for peer in &mut peers {
        peer.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut rest = Vec::new();
        match peer.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("a half-open connection was not closed: {e}"),
        }
    }
}

#[test]
fn with_auth_on_the_admin_commands_need_a_super_user_and_manage_users_and_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = ("root", "root-secret-key");
    let env = [
        ("ROCKETLOG_BROKER__AUTH__ENABLED", "true"),
        ("ROCKETLOG_BROKER__AUTH__INIT_ACCESS_KEY", root.0),
        ("ROCKETLOG_BROKER__AUTH__INIT_SECRET_KEY", root.1),
    ];
    let mut server = start_standalone_under(dir.path(), &[], &env);
    let client = server.client.clone();

    // Unsigned, wrongly signed, and signed by a user without the super-user flag: refused.
    let anonymous = stderr_of_failed(&admin(&client, &["topic", "list"]));
    assert!(
        anonymous.contains("Unauthenticated") && anonymous.contains("authorization header"),
        "{anonymous}"
    );
    let wrong = stderr_of_failed(&admin_as(
        &client,
        Some(("root", "wrong-secret")),
        &["stats"],
    ));
    assert!(wrong.contains("bad signature"), "{wrong}");

    let added = stdout_of(&admin_as(
        &client,
        Some(root),
        &["user", "add", "app", "--secret", "app-secret-key"],
    ));
    assert!(added.contains("user app created"), "{added}");
    let app = Some(("app", "app-secret-key"));
    let not_super = stderr_of_failed(&admin_as(&client, app, &["topic", "list"]));
    assert!(
        not_super.contains("PermissionDenied") && not_super.contains("super user"),
        "{not_super}"
    );

    // Rules: granted, listed (never a secret), revoked.
    for rule in [
        ["allow", "pub", "topic", "orders-*"],
        ["deny", "pub", "topic", "orders-audit"],
        ["allow", "sub", "group", "billing"],
    ] {
        let mut args = vec!["acl", "grant", "app"];
        args.extend(rule);
        stdout_of(&admin_as(&client, Some(root), &args));
    }
    let bad = stderr_of_failed(&admin_as(
        &client,
        Some(root),
        &["acl", "grant", "app", "allow", "pub", "group", "billing"],
    ));
    assert!(bad.contains("groups only consume"), "{bad}");
    let listed = stdout_of(&admin_as(&client, Some(root), &["user", "list"]));
    assert!(
        listed.contains("root  super user")
            && listed.contains("allow pub topic orders-*")
            && listed.contains("deny pub topic orders-audit")
            && listed.contains("allow sub group billing")
            && !listed.contains("secret"),
        "{listed}"
    );
    let revoked = stdout_of(&admin_as(
        &client,
        Some(root),
        &["acl", "revoke", "app", "allow", "sub", "group", "billing"],
    ));
    assert!(revoked.contains("revoked"), "{revoked}");
    let again = stdout_of(&admin_as(
        &client,
        Some(root),
        &["acl", "revoke", "app", "allow", "sub", "group", "billing"],
    ));
    assert!(again.contains("had no rule"), "{again}");

    // Users and rules are kept across a restart; the secret file is private.
    let status = sigterm(&mut server.child);
    assert!(status.success(), "{status:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("config/users.json"))
            .expect("users.json")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "users.json is readable by others: {mode:o}"
        );
    }
    let server = start_standalone_under(dir.path(), &[], &env);
    let listed = stdout_of(&admin_as(&server.client, Some(root), &["user", "list"]));
    assert!(
        listed.contains("allow pub topic orders-*") && !listed.contains("allow sub group billing"),
        "{listed}"
    );
    let deleted = stdout_of(&admin_as(
        &server.client,
        Some(root),
        &["user", "delete", "app"],
    ));
    assert!(deleted.contains("user app deleted"), "{deleted}");
    let gone = stderr_of_failed(&admin_as(&server.client, app, &["stats"]));
    assert!(gone.contains("unknown access key"), "{gone}");
}

#[test]
fn with_nameserver_auth_on_only_brokers_signing_with_its_key_register() {
    let key = [
        ("ROCKETLOG_NAMESERVER__AUTH__ENABLED", "true"),
        ("ROCKETLOG_NAMESERVER__AUTH__ACCESS_KEY", "cluster"),
        (
            "ROCKETLOG_NAMESERVER__AUTH__SECRET_KEY",
            "cluster-secret-key",
        ),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let signing = [
        ("ROCKETLOG_BROKER__AUTH__NAMESERVER_ACCESS_KEY", "cluster"),
        (
            "ROCKETLOG_BROKER__AUTH__NAMESERVER_SECRET_KEY",
            "cluster-secret-key",
        ),
    ];
    let env: Vec<(&str, &str)> = key.iter().chain(signing.iter()).copied().collect();
    let good = start_standalone_under(&dir.path().join("good"), &[], &env);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = stdout_of(&admin(&good.client, &["cluster"]));
        if out.contains("reachable") && out.contains("(this broker)") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never registered:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Unsigned, or signed with another secret: the nameserver refuses the broker, saying why.
    let wrong = [
        ("ROCKETLOG_BROKER__AUTH__NAMESERVER_ACCESS_KEY", "cluster"),
        (
            "ROCKETLOG_BROKER__AUTH__NAMESERVER_SECRET_KEY",
            "not-the-secret",
        ),
    ];
    for (name, extra, why) in [
        ("unsigned", &[][..], "no authorization header"),
        ("wrong", &wrong[..], "bad signature"),
    ] {
        let env: Vec<(&str, &str)> = key.iter().chain(extra.iter()).copied().collect();
        let refused = start_standalone_under(&dir.path().join(name), &[], &env);
        let out = stdout_of(&admin(&refused.client, &["cluster"]));
        assert!(
            out.contains("unreachable: Unauthenticated") && out.contains(why),
            "{name}: {out}"
        );
        assert!(!out.contains("(this broker)"), "{name}: {out}");
    }
}

#[test]
fn bench_reports_the_cpu_both_processes_spent_per_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_standalone(dir.path());
    let out = Command::new(BIN)
        .args(["--worker-threads", "1", "bench", "--quiet"])
        .args(["--endpoint", &broker.client])
        .args(["--broker-pid", &broker.child.id().to_string()])
        .args(["--duration", "60", "produce", "--messages", "3000"])
        .output()
        .expect("bench");
    let text = stdout_of(&out);
    assert!(text.contains("produce: 3000 msgs in"), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("produce cpu per message: "))
        .unwrap_or_else(|| panic!("no cpu line in:\n{text}"));
    let figure = |who: &str| -> f64 {
        let rest = &line[line.find(who).unwrap_or_else(|| panic!("{line}")) + who.len()..];
        rest.split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no figure after {who:?} in {line:?}"))
    };
    // 3,000 acknowledged sends cost each process many clock ticks: neither figure can be zero
    // unless /proc was not read.
    assert!(figure("bench ") > 0.0, "{line}");
    assert!(figure("broker ") > 0.0, "{line}");
}

#[test]
fn zero_worker_threads_is_refused_with_the_reason() {
    let out = Command::new(BIN)
        .args(["--worker-threads", "0", "standalone"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--worker-threads"), "{err}");
}
