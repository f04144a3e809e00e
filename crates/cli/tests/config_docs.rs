//! `docs/configuration.md` cannot drift from the code: every setting of `[broker]` and
//! `[nameserver]` (nested sections included) is documented under its dotted key with exactly
//! its default, every documented key exists, the top-level keys are the ones the binary reads,
//! and the example configuration file loads and validates.
//!
//! The defaults come from serializing `BrokerConfig::default()` and
//! `NameserverConfig::default()`; each leaf is written as its TOML value (`"text"`, `42`,
//! `0.85`, `true`, `[]`), and an `Option` with no default as `(none)`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use config::{Config, File, FileFormat};
use rocketlog_broker::BrokerConfig;
use rocketlog_nameserver::NameserverConfig;
use serde_json::Value;

/// The file's sections whose settings the code's defaults describe.
const SECTIONS: [&str; 2] = ["broker", "nameserver"];

fn doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md")
}

fn doc() -> String {
    let path = doc_path();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// One row of a `| key | default | unit | meaning |` table.
#[derive(Debug)]
struct Row {
    key: String,
    default: String,
    unit: String,
    meaning: String,
    line: usize,
}

/// The cells of a table line, split on unescaped `|`.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|');
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut out = vec![String::new()];
    let mut escaped = false;
    for c in inner.chars() {
        match c {
            '|' if !escaped => out.push(String::new()),
            _ => out.last_mut().expect("one cell at least").push(c),
        }
        escaped = c == '\\';
    }
    out.iter().map(|c| c.trim().to_owned()).collect()
}

/// `text` without one pair of enclosing backticks.
fn unquote(text: &str) -> String {
    text.strip_prefix('`')
        .and_then(|t| t.strip_suffix('`'))
        .unwrap_or(text)
        .to_owned()
}

/// Every row of every settings table (header `| key | default | unit | meaning |`) outside
/// fenced code blocks.
fn documented(doc: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut fenced = false;
    let mut in_table = false;
    let mut lines = doc.lines().enumerate().peekable();
    while let Some((n, line)) = lines.next() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        if !line.trim_start().starts_with('|') {
            in_table = false;
            continue;
        }
        if !in_table {
            in_table = true;
            if cells(line) == ["key", "default", "unit", "meaning"] {
                // The header's `|---|` line.
                lines.next();
            } else {
                // Another kind of table: skip it whole.
                while lines
                    .peek()
                    .is_some_and(|(_, l)| l.trim_start().starts_with('|'))
                {
                    lines.next();
                }
                in_table = false;
            }
            continue;
        }
        let c = cells(line);
        assert_eq!(
            c.len(),
            4,
            "docs/configuration.md line {}: a settings row needs 4 cells: {line}",
            n + 1
        );
        rows.push(Row {
            key: unquote(&c[0]),
            default: unquote(&c[1]),
            unit: c[2].clone(),
            meaning: c[3].clone(),
            line: n + 1,
        });
    }
    rows
}

/// A default as the documentation writes it: the TOML value, or `(none)` for an empty option.
fn toml_literal(value: &Value) -> String {
    match value {
        Value::Null => "(none)".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => serde_json::to_string(s).expect("a string serializes"),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(toml_literal).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(_) => panic!("a table inside an array has no one-cell default"),
    }
}

/// `value`'s leaves under dotted keys beginning with `prefix`.
fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, String>) {
    match value {
        Value::Object(fields) => {
            for (name, v) in fields {
                flatten(&format!("{prefix}.{name}"), v, out);
            }
        }
        leaf => {
            out.insert(prefix.to_owned(), toml_literal(leaf));
        }
    }
}

/// Every `[broker]` and `[nameserver]` setting with its default.
fn code_defaults() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let broker = serde_json::to_value(BrokerConfig::default()).expect("BrokerConfig serializes");
    flatten("broker", &broker, &mut out);
    let nameserver =
        serde_json::to_value(NameserverConfig::default()).expect("NameserverConfig serializes");
    flatten("nameserver", &nameserver, &mut out);
    out
}

#[test]
fn every_setting_is_documented_with_its_default() {
    let rows = documented(&doc());
    let code = code_defaults();
    let mut problems = Vec::new();

    let mut docs: BTreeMap<&str, &Row> = BTreeMap::new();
    for row in &rows {
        if row.unit.is_empty() || row.meaning.is_empty() {
            problems.push(format!(
                "line {}: `{}` has no unit or no meaning (write - for no unit)",
                row.line, row.key
            ));
        }
        if let Some(first) = docs.insert(&row.key, row) {
            problems.push(format!(
                "line {}: `{}` is documented twice (first on line {})",
                row.line, row.key, first.line
            ));
        }
    }

    let missing: Vec<String> = code
        .iter()
        .filter(|(key, _)| !docs.contains_key(key.as_str()))
        .map(|(key, default)| format!("  | `{key}` | `{default}` |"))
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "settings in the code but not documented (key, default):\n{}",
            missing.join("\n")
        ));
    }

    // Top-level keys (no dot) are checked against the binary by `top_level_keys_are_the_binarys`.
    let extra: Vec<String> = docs
        .values()
        .filter(|row| row.key.contains('.') && !code.contains_key(&row.key))
        .map(|row| format!("  line {}: `{}`", row.line, row.key))
        .collect();
    if !extra.is_empty() {
        problems.push(format!(
            "documented settings that do not exist in the code:\n{}",
            extra.join("\n")
        ));
    }

    let mismatched: Vec<String> = code
        .iter()
        .filter_map(|(key, default)| {
            let row = docs.get(key.as_str())?;
            (row.default != *default).then(|| {
                format!(
                    "  line {}: `{key}` documents `{}`, the code's default is `{default}`",
                    row.line, row.default
                )
            })
        })
        .collect();
    if !mismatched.is_empty() {
        problems.push(format!(
            "documented defaults that differ from the code:\n{}",
            mismatched.join("\n")
        ));
    }

    assert!(
        problems.is_empty(),
        "{} is out of date with the code:\n{}",
        doc_path().display(),
        problems.join("\n")
    );
}

/// The top-level keys the binary accepts in a configuration file, as its error for an unknown
/// one lists them (`unknown field ..., expected one of ...`).
fn binary_top_level_keys() -> BTreeSet<String> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("unknown-key.toml");
    std::fs::write(&file, "no_such_setting_for_the_test = 1\n").expect("writing the file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rocketlog"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("ROCKETLOG_")) {
        cmd.env_remove(name);
    }
    let mut child = cmd
        .arg("--config")
        .arg(&file)
        .args(["nameserver", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting rocketlog");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("waiting for rocketlog").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rocketlog accepted a configuration file with an unknown key and kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child
        .wait_with_output()
        .expect("reading rocketlog's stderr");
    assert!(!out.status.success(), "rocketlog accepted an unknown key");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = stderr
        .split_once("expected")
        .map(|(_, rest)| rest.lines().next().unwrap_or_default())
        .unwrap_or_else(|| panic!("no list of expected keys in rocketlog's error: {stderr}"));
    let keys: BTreeSet<String> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    assert!(
        !keys.is_empty(),
        "no list of expected keys in rocketlog's error: {stderr}"
    );
    keys
}

#[test]
fn top_level_keys_are_the_binarys() {
    let binary = binary_top_level_keys();
    for section in SECTIONS {
        assert!(
            binary.contains(section),
            "the binary no longer reads a [{section}] section: it expects {binary:?}"
        );
    }
    let code: BTreeSet<String> = binary
        .into_iter()
        .filter(|k| !SECTIONS.contains(&k.as_str()))
        .collect();
    let docs: BTreeSet<String> = documented(&doc())
        .into_iter()
        .map(|row| row.key)
        .filter(|k| !k.contains('.'))
        .collect();
    let missing: Vec<&String> = code.difference(&docs).collect();
    let extra: Vec<&String> = docs.difference(&code).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{}: top-level keys the binary reads but the page does not document: {missing:?}; \
         documented top-level keys the binary does not read: {extra:?}",
        doc_path().display()
    );
}

/// The text of the first ```toml block after the heading `## Example`.
fn example(doc: &str) -> String {
    let (_, after) = doc
        .split_once("\n## Example")
        .expect("docs/configuration.md has an `## Example` section");
    let (_, block) = after
        .split_once("```toml\n")
        .expect("the Example section has a ```toml block");
    let (block, _) = block.split_once("```").expect("the toml block is closed");
    block.to_owned()
}

#[test]
fn the_example_loads_and_validates() {
    let text = example(&doc());
    let merged = Config::builder()
        .add_source(File::from_str(&text, FileFormat::Toml))
        .build()
        .expect("the example is TOML");
    let top: BTreeMap<String, Value> = merged
        .clone()
        .try_deserialize()
        .expect("the example is a table");
    let known = binary_top_level_keys();
    for key in top.keys() {
        assert!(
            known.contains(key),
            "the example sets `{key}`, which is no top-level key"
        );
    }
    let broker: BrokerConfig = merged.get("broker").expect("the example's [broker]");
    broker.validate().expect("the example's [broker] is valid");
    let nameserver: NameserverConfig = merged
        .get("nameserver")
        .expect("the example's [nameserver]");
    nameserver
        .validate()
        .expect("the example's [nameserver] is valid");
}
