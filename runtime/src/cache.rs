//! The size of the processor's caches, for kernels that size their blocks of work to stay in
//! one.

use std::sync::OnceLock;

/// The L2 size assumed where the system does not say (or says something implausible).
const DEFAULT_L2_BYTES: usize = 1 << 20;

/// The sizes a reported L2 may have; anything else is taken for a misreport.
const PLAUSIBLE_L2_BYTES: std::ops::RangeInclusive<usize> = (64 << 10)..=(64 << 20);

/// The bytes of one core's L2 cache (data or unified), as the system reports it, or
/// [`DEFAULT_L2_BYTES`]. Worked out once per process.
pub(crate) fn l2_bytes() -> usize {
    static L2_BYTES: OnceLock<usize> = OnceLock::new();
    *L2_BYTES.get_or_init(|| {
        reported_l2_bytes()
            .filter(|bytes| PLAUSIBLE_L2_BYTES.contains(bytes))
            .unwrap_or(DEFAULT_L2_BYTES)
    })
}

/// The L2 size in `/sys/devices/system/cpu/cpu0/cache`: the first `index*` directory whose
/// `level` is 2 and whose `type` is not `Instruction`.
#[cfg(target_os = "linux")]
fn reported_l2_bytes() -> Option<usize> {
    (0..8).find_map(|index| {
        let directory = format!("/sys/devices/system/cpu/cpu0/cache/index{index}");
        let read = |name: &str| std::fs::read_to_string(format!("{directory}/{name}")).ok();
        let is_l2_data = read("level")?.trim() == "2" && read("type")?.trim() != "Instruction";
        if is_l2_data {
            parse_size(&read("size")?)
        } else {
            None
        }
    })
}

#[cfg(not(target_os = "linux"))]
fn reported_l2_bytes() -> Option<usize> {
    None
}

/// Bytes in a sysfs cache size: `2048K`, `2M`, or a plain count of bytes.
fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((split, _)) => text.split_at(split),
        None => (text, ""),
    };
    let scale = match unit {
        "" => 1,
        "K" | "KB" | "KiB" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        _ => return None,
    };
    digits.parse::<usize>().ok()?.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_sysfs_writes_them() {
        assert_eq!(parse_size("2048K\n"), Some(2 << 20));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("524288"), Some(512 << 10));
        assert_eq!(parse_size("512 K"), None);
        assert_eq!(parse_size("K"), None);
        assert_eq!(parse_size("99999999999999999999K"), None);
        assert_eq!(parse_size(&format!("{}M", usize::MAX)), None);
    }

    #[test]
    fn the_l2_size_is_plausible() {
        assert!(PLAUSIBLE_L2_BYTES.contains(&l2_bytes()));
    }
}
