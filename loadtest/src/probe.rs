//! CPU and memory of threads and processes, read from Linux `/proc`.
//!
//! CPU time comes from `schedstat` (nanoseconds on the CPU), falling back to `stat`
//! (`utime + stime` in USER_HZ ticks, 100 per second on Linux). Every reader returns
//! `None` where `/proc` is missing or unreadable (another OS, a foreign process), so a
//! report says "not measured" rather than a wrong zero.

use std::fs;
use std::path::Path;

/// USER_HZ: the unit of `utime`/`stime` in `/proc/*/stat` (fixed at 100 on Linux).
const USER_HZ: f64 = 100.0;

/// CPU seconds used by the threads of this process whose name starts with a prefix,
/// counted so that a thread which exits does not take its time with it: each thread
/// counts with the CPU it had when a reading last saw it. (A plain sum over the live
/// threads drops when an idle blocking-pool thread exits, 10 s after its last task,
/// which made a phase's difference too small, even negative.) What an exiting thread
/// did after the last reading is lost; a blocking-pool thread has been idle for 10 s
/// when it exits.
#[derive(Debug)]
pub struct ThreadsCpu {
    prefix: String,
    /// (thread id, start time in clock ticks) → CPU seconds when last seen; the start
    /// time tells a reused thread id from the thread that had it before.
    seen: std::sync::Mutex<std::collections::HashMap<(u64, u64), f64>>,
}

impl ThreadsCpu {
    /// Counts threads named `prefix…`.
    #[must_use]
    pub fn new(prefix: &str) -> Self {
        ThreadsCpu {
            prefix: prefix.to_owned(),
            seen: std::sync::Mutex::default(),
        }
    }

    /// CPU seconds of every such thread seen so far, at its latest reading.
    #[must_use]
    pub fn read(&self) -> Option<f64> {
        let tasks = fs::read_dir("/proc/self/task").ok()?;
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for task in tasks.flatten() {
            let dir = task.path();
            let Ok(name) = fs::read_to_string(dir.join("comm")) else {
                continue;
            };
            if !name.trim_end().starts_with(&self.prefix) {
                continue;
            }
            let tid = task.file_name().to_string_lossy().parse::<u64>().ok();
            let started = fs::read_to_string(dir.join("stat"))
                .ok()
                .and_then(|stat| parse_stat_start_ticks(&stat));
            if let (Some(tid), Some(started), Some(cpu)) = (tid, started, cpu_seconds_of(&dir)) {
                seen.insert((tid, started), cpu);
            }
        }
        Some(seen.values().sum())
    }
}

/// Field 22 (`starttime`) of a `stat` line.
fn parse_stat_start_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ")": state is field 3, so starttime (22) is the 20th field here.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// CPU seconds used so far by this whole process.
#[must_use]
pub fn process_cpu_seconds() -> Option<f64> {
    stat_cpu_seconds(Path::new("/proc/self"))
}

/// CPU seconds used so far by process `pid` (all its threads).
#[must_use]
pub fn pid_cpu_seconds(pid: u32) -> Option<f64> {
    stat_cpu_seconds(&Path::new("/proc").join(pid.to_string()))
}

/// Peak resident set size of this process, bytes.
#[must_use]
pub fn process_peak_rss_bytes() -> Option<u64> {
    peak_rss(Path::new("/proc/self"))
}

/// Peak resident set size of process `pid`, bytes.
#[must_use]
pub fn pid_peak_rss_bytes(pid: u32) -> Option<u64> {
    peak_rss(&Path::new("/proc").join(pid.to_string()))
}

/// A thread's (or process's) CPU time: `schedstat` first, `stat` otherwise.
fn cpu_seconds_of(dir: &Path) -> Option<f64> {
    if let Ok(s) = fs::read_to_string(dir.join("schedstat"))
        && let Some(ns) = s
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
    {
        #[allow(clippy::cast_precision_loss)] // ns of CPU time: far below 2^52
        return Some(ns as f64 / 1e9);
    }
    stat_cpu_seconds(dir)
}

/// `utime + stime` from `stat` (of a process: all threads, including exited ones).
fn stat_cpu_seconds(dir: &Path) -> Option<f64> {
    let stat = fs::read_to_string(dir.join("stat")).ok()?;
    parse_stat_cpu_ticks(&stat).map(|ticks| ticks / USER_HZ)
}

/// Fields 14 and 15 (`utime`, `stime`) of a `stat` line. The command name (field 2)
/// is in parentheses and may contain spaces, so fields are counted after its `)`.
fn parse_stat_cpu_ticks(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ")": state is field 3, so utime (14) is the 12th field here.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Current resident set size of process `pid`, bytes.
#[must_use]
pub fn pid_rss_bytes(pid: u32) -> Option<u64> {
    let status =
        fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    parse_status_kb(&status, "VmRSS:")
}

fn peak_rss(dir: &Path) -> Option<u64> {
    let status = fs::read_to_string(dir.join("status")).ok()?;
    parse_vm_hwm(&status)
}

/// `VmHWM:   123456 kB` → bytes.
fn parse_vm_hwm(status: &str) -> Option<u64> {
    parse_status_kb(status, "VmHWM:")
}

/// `<key>   123456 kB` of a `status` file → bytes.
fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "42 (tokio (rt) 1) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0";
        assert_eq!(parse_stat_cpu_ticks(line), Some(300.0));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn start_time_is_counted_after_the_command_name() {
        let line = "42 (tokio (rt) 1) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 7 0 123456 99";
        assert_eq!(parse_stat_start_ticks(line), Some(123_456));
        assert_eq!(parse_stat_start_ticks("42 (x) S 1 2"), None);
    }

    #[test]
    fn a_thread_that_exits_keeps_its_time_in_the_count() {
        let tally = ThreadsCpu::new("probe-exits");
        let worker = std::thread::Builder::new()
            .name("probe-exits".into())
            .spawn(|| {
                let started = std::time::Instant::now();
                let mut x = 0u64;
                while started.elapsed() < std::time::Duration::from_millis(50) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                x
            })
            .unwrap();
        // Seen while it runs (or right after it finished, before it is reaped).
        let mut seen_running = None;
        while !worker.is_finished() {
            seen_running = tally.read();
        }
        worker.join().unwrap();
        if let Some(before) = seen_running.filter(|_| Path::new("/proc/self/task").exists()) {
            // Gone from /proc now; the count must not drop below what was seen.
            let after = tally.read().unwrap();
            assert!(after >= before, "{after} < {before}");
        }
    }

    #[test]
    fn peak_rss_is_read_in_bytes() {
        assert_eq!(
            parse_vm_hwm("Name:\tx\nVmHWM:\t    2048 kB\n"),
            Some(2 * 1024 * 1024)
        );
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
        assert_eq!(
            parse_status_kb("VmHWM:\t 9 kB\nVmRSS:\t    3 kB\n", "VmRSS:"),
            Some(3 * 1024)
        );
    }

    #[test]
    fn this_process_is_measurable_on_linux() {
        if Path::new("/proc/self/stat").exists() {
            assert!(process_cpu_seconds().is_some());
            assert!(process_peak_rss_bytes().is_some_and(|b| b > 0));
            assert!(pid_rss_bytes(std::process::id()).is_some_and(|b| b > 0));
            assert!(
                ThreadsCpu::new("no-such-thread")
                    .read()
                    .is_some_and(|s| s == 0.0)
            );
        }
    }
}
