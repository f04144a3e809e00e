//! Layered configuration: TOML file, then `ROCKETLOG_*` environment variables, then flags.
//!
//! Environment keys use `__` between levels, e.g. `ROCKETLOG_BROKER__FLUSH_MODE=sync` sets
//! `[broker] flush_mode`. Flags are applied last as explicit overrides. Only variables naming
//! one of the file's top-level keys are read, so unrelated `ROCKETLOG_*` variables (test and
//! tool settings) never make a configuration invalid.

use anyhow::Context;
use config::{Config, Environment, File, FileFormat};
use serde::de::DeserializeOwned;
use std::path::Path;

/// Loads `T` from the optional file, the environment and the given `(key, value)` overrides.
/// `sections` are `T`'s top-level keys: environment variables for anything else are ignored.
pub fn load<T: DeserializeOwned>(
    file: Option<&Path>,
    sections: &[&str],
    overrides: &[(&str, Option<String>)],
) -> anyhow::Result<T> {
    let mut builder = Config::builder();
    if let Some(path) = file {
        builder = builder.add_source(File::from(path).format(FileFormat::Toml).required(true));
    }
    builder = builder.add_source(
        Environment::with_prefix("ROCKETLOG")
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("broker.nameserver_addresses")
            .with_list_parse_key("nameserver_addresses")
            .with_list_parse_key("nameserver.controller.peers")
            .source(Some(config_env(std::env::vars(), sections))),
    );
    for (key, value) in overrides {
        if let Some(v) = value {
            builder = builder
                .set_override(*key, v.as_str())
                .with_context(|| format!("flag for {key}"))?;
        }
    }
    let merged = builder.build().context("reading configuration")?;
    merged
        .try_deserialize()
        .context("invalid configuration (file, ROCKETLOG_* environment or flags)")
}

/// The `ROCKETLOG_*` variables that address one of `sections` (`ROCKETLOG_LISTEN`,
/// `ROCKETLOG_BROKER__FLUSH_MODE`, ...).
fn config_env(
    vars: impl Iterator<Item = (String, String)>,
    sections: &[&str],
) -> config::Map<String, String> {
    vars.filter(|(key, _)| {
        let Some(rest) = key.strip_prefix("ROCKETLOG_") else {
            return false;
        };
        let head = rest.split("__").next().unwrap_or_default();
        sections.iter().any(|s| head.eq_ignore_ascii_case(s))
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configuration_variables_are_read() {
        let vars = [
            ("ROCKETLOG_LISTEN", "127.0.0.1:1"),
            ("ROCKETLOG_BROKER__FLUSH_MODE", "sync"),
            ("ROCKETLOG_TEST_VENV", "/tmp/venv"),
            ("ROCKETLOG_BROKERS", "x"),
            ("PATH", "/bin"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let mut kept: Vec<_> = config_env(vars.into_iter(), &["listen", "broker"])
            .into_keys()
            .collect();
        kept.sort();
        assert_eq!(kept, ["ROCKETLOG_BROKER__FLUSH_MODE", "ROCKETLOG_LISTEN"]);
    }
}
