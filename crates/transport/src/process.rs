//! Standard process metrics read from `/proc/self` at scrape time, as the other Prometheus
//! clients name them: `process_resident_memory_bytes`, `process_cpu_seconds_total`,
//! `process_open_fds`. Where `/proc` cannot be read (not Linux) the collector reports nothing.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// The process collector; register it once per registry.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(rss) = resident_bytes() {
            let g = ConstGauge::new(i64::try_from(rss).unwrap_or(i64::MAX));
            let m = encoder.encode_descriptor(
                "process_resident_memory",
                "Resident memory size",
                Some(&Unit::Bytes),
                g.metric_type(),
            )?;
            g.encode(m)?;
        }
        if let Some(cpu) = cpu_seconds() {
            let c = ConstCounter::new(cpu);
            let m = encoder.encode_descriptor(
                "process_cpu",
                "User and system CPU time spent",
                Some(&Unit::Seconds),
                c.metric_type(),
            )?;
            c.encode(m)?;
        }
        if let Some(fds) = open_fds() {
            let g = ConstGauge::new(i64::try_from(fds).unwrap_or(i64::MAX));
            let m = encoder.encode_descriptor(
                "process_open_fds",
                "Open file descriptors",
                None,
                g.metric_type(),
            )?;
            g.encode(m)?;
        }
        Ok(())
    }
}

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages = parse_statm_resident(&statm)?;
    Some(pages.saturating_mul(rustix::param::page_size() as u64))
}

fn cpu_seconds() -> Option<f64> {
    cpu_seconds_of(None)
}

/// User plus system CPU time of a process (all its threads), seconds: this one with `None`.
/// `None` where `/proc` cannot be read or the process is gone.
pub fn cpu_seconds_of(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    let ticks = parse_stat_cpu_ticks(&stat)?;
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    Some(ticks as f64 / per_second as f64)
}

fn open_fds() -> Option<usize> {
    // The directory handle itself is one of the entries while it is read.
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count();
    Some(n.saturating_sub(1))
}

/// Resident pages: the second field of `/proc/<pid>/statm`.
fn parse_statm_resident(statm: &str) -> Option<u64> {
    statm.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// `utime + stime` in clock ticks from `/proc/<pid>/stat`. The command name (field 2) is in
/// parentheses and may hold spaces or parentheses itself, so fields are counted from the last
/// `)`: utime and stime are fields 14 and 15 of the line, the 12th and 13th after it.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime.saturating_add(stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_statm() {
        assert_eq!(
            parse_statm_resident("5000 1234 300 10 0 900 0\n"),
            Some(1234)
        );
        assert_eq!(parse_statm_resident("5000"), None);
        assert_eq!(parse_statm_resident(""), None);
    }

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let line = "4242 (rocket log) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 8 0 \
                    100 1000000 500 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(line), Some(325));
        let tricky = "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 11 22 0 0";
        assert_eq!(parse_stat_cpu_ticks(tricky), Some(33));
        assert_eq!(parse_stat_cpu_ticks("7 (short) R 1"), None);
        assert_eq!(parse_stat_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn reads_this_process() {
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(resident_bytes().is_some_and(|b| b > 0));
            assert!(cpu_seconds().is_some());
            assert!(open_fds().is_some_and(|n| n > 0));
        }
    }
}
