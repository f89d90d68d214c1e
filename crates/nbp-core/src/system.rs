//! The machine: a one-line description printed with benchmark results, and its memory, against which work that
//! would allocate more than the machine has is refused before it starts (an allocation failure aborts the
//! process with a backtrace instead of an error).

use crate::{Error, Result};

/// Total memory in bytes (`MemTotal` of `/proc/meminfo`, read once), `None` where it cannot be read.
pub fn total_memory() -> Option<u64> {
    static TOTAL: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *TOTAL.get_or_init(|| {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let kb: u64 =
            meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.split_whitespace().next()?.parse().ok()?;
        kb.checked_mul(1024)
    })
}

/// An error when `bytes` (`None`: more than `u128` holds) is more than this machine's memory: `what` names the
/// work (`"key/value caches of 100000 sequences"`), `fix` says how to ask for less. Passes where the memory cannot
/// be read.
pub fn check_memory(what: &str, bytes: Option<u128>, fix: &str) -> Result<()> {
    check_memory_of(total_memory(), what, bytes, fix)
}

fn check_memory_of(total: Option<u64>, what: &str, bytes: Option<u128>, fix: &str) -> Result<()> {
    let Some(total) = total else { return Ok(()) };
    match bytes {
        Some(b) if b <= total as u128 => Ok(()),
        _ => Err(Error::invalid(format!(
            "{what} would take {} of memory, more than this machine's {:.1} GB: {fix}",
            bytes.map_or("more than 2^128 bytes".into(), |b| format!("{:.1} GB", b as f64 / 1e9)),
            total as f64 / 1e9
        ))),
    }
}

/// The product of `factors` in `u128`, `None` on overflow: for memory estimates.
pub fn product(factors: &[usize]) -> Option<u128> {
    factors.iter().try_fold(1u128, |n, &f| n.checked_mul(f as u128))
}

/// CPU model, logical core count and memory, e.g. `Intel(R) Xeon(R) Processor, 2 cores, 23.4 GiB`.
pub fn machine_description() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_string()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map(|kb| format!(", {:.1} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!("{model}, {cores} cores{mem}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_beyond_the_machine_is_refused_with_the_fix() {
        let gb = 1_000_000_000u64;
        assert!(check_memory_of(Some(24 * gb), "caches", Some(24 * gb as u128), "ask for less").is_ok());
        let err = check_memory_of(Some(24 * gb), "caches", Some(30 * gb as u128), "ask for less").unwrap_err();
        assert_eq!(
            err.to_string(),
            "caches would take 30.0 GB of memory, more than this machine's 24.0 GB: ask for less"
        );
        let err = check_memory_of(Some(gb), "x", None, "no").unwrap_err().to_string();
        assert!(err.contains("more than 2^128 bytes"), "{err}");
        assert!(check_memory_of(None, "x", None, "unknown memory passes").is_ok());
        assert_eq!(product(&[2, 3, 4]), Some(24));
        assert_eq!(product(&[usize::MAX, usize::MAX, usize::MAX]), None);
        assert!(total_memory().is_some_and(|m| m > 0), "this test runs on Linux");
    }
}
