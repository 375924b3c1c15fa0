//! Fallible allocation of the buffers whose size comes from a model or a file: weights, arenas,
//! KV caches and block pools.
//!
//! A model file is untrusted input, and a network description can ask for more memory than the
//! machine has (a 100,000 × 100,000 linear layer is 40 GB of weights). Rust's `vec![0.0; n]`
//! aborts the process when the allocator fails, so every such buffer goes through
//! [`filled`], which first checks the request against [`memory_budget`] and then reserves with
//! `try_reserve_exact`, and returns an [`AllocError`] naming the buffer and the bytes instead.
//!
//! The budget is the machine's memory (`MemTotal` in `/proc/meminfo`), or `NNC_MEMORY_LIMIT`
//! bytes when that environment variable is set (lower or higher): each buffer is checked on its
//! own, so the budget catches one impossible request, not the sum of many possible ones. Where
//! neither is known, only the allocator's own refusal is caught. Under Linux's default
//! overcommit, a request that passes both can still be killed later by the OOM killer when the
//! memory is touched; that cannot be caught from inside the process.

use std::fmt;

/// A buffer could not be allocated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocError {
    /// What the buffer is for: `weight \`fc.weight\``, `the f32 arena`, `KV cache keys`.
    pub buffer: String,
    /// The bytes asked for; `None` when the size overflows `usize`.
    pub bytes: Option<u128>,
    /// Why: over the budget (with the budget and where it came from), or refused by the
    /// allocator.
    pub reason: AllocFailure,
}

/// Why an allocation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllocFailure {
    /// The element count times the element size overflows `usize`.
    Overflow,
    /// The request exceeds the memory budget.
    OverBudget { budget: u64, source: BudgetSource },
    /// The allocator refused the request.
    Refused,
    /// `NNC_MEMORY_LIMIT` is set but is not a number of bytes.
    BadLimit(String),
}

/// Where the memory budget came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetSource {
    /// `MemTotal` in `/proc/meminfo`.
    MemTotal,
    /// The `NNC_MEMORY_LIMIT` environment variable.
    Environment,
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let buffer = &self.buffer;
        match self.bytes {
            Some(bytes) => write!(f, "cannot allocate {} for {buffer}: ", format_bytes(bytes))?,
            None => write!(f, "cannot allocate {buffer}: ")?,
        }
        match &self.reason {
            AllocFailure::Overflow => write!(f, "its size overflows the address space"),
            AllocFailure::OverBudget { budget, source } => {
                let source = match source {
                    BudgetSource::MemTotal => "the machine's memory (MemTotal)",
                    BudgetSource::Environment => "the limit NNC_MEMORY_LIMIT sets",
                };
                write!(
                    f,
                    "it is more than {source}, {}",
                    format_bytes(u128::from(*budget))
                )
            }
            AllocFailure::Refused => write!(f, "the allocator refused it (out of memory)"),
            AllocFailure::BadLimit(value) => write!(
                f,
                "NNC_MEMORY_LIMIT={value:?} is not a number of bytes (e.g. 8000000000)"
            ),
        }
    }
}

impl std::error::Error for AllocError {}

/// A vector of `count` copies of `value`, or an error naming `buffer` when the memory cannot be
/// had. `buffer` is only called on failure.
pub fn filled<T: Clone>(
    buffer: impl FnOnce() -> String,
    count: usize,
    value: T,
) -> Result<Vec<T>, AllocError> {
    let mut vector = with_capacity(buffer, count)?;
    vector.resize(count, value);
    Ok(vector)
}

/// An empty vector with room for `count` elements, or an error naming `buffer`.
pub fn with_capacity<T>(
    buffer: impl FnOnce() -> String,
    count: usize,
) -> Result<Vec<T>, AllocError> {
    let element_bytes = std::mem::size_of::<T>();
    let mut buffer = Some(buffer);
    check(
        || (buffer.take().expect("named once"))(),
        count,
        element_bytes,
    )?;
    let mut vector = Vec::new();
    match vector.try_reserve_exact(count) {
        Ok(()) => Ok(vector),
        Err(_) => Err(AllocError {
            buffer: (buffer.take().expect("named once"))(),
            bytes: Some(count as u128 * element_bytes as u128),
            reason: AllocFailure::Refused,
        }),
    }
}

/// Checks that `count` elements of `element_bytes` bytes each fit the memory budget, without
/// allocating: what `nnc check` and generated constructors call before a big allocation.
pub fn check(
    buffer: impl FnOnce() -> String,
    count: usize,
    element_bytes: usize,
) -> Result<(), AllocError> {
    let bytes = count as u128 * element_bytes as u128;
    let fail = |buffer: String, bytes, reason| {
        Err(AllocError {
            buffer,
            bytes,
            reason,
        })
    };
    if bytes > isize::MAX as u128 {
        return fail(buffer(), Some(bytes), AllocFailure::Overflow);
    }
    match memory_budget() {
        Ok(Some((budget, source))) if bytes > u128::from(budget) => fail(
            buffer(),
            Some(bytes),
            AllocFailure::OverBudget { budget, source },
        ),
        Ok(_) => Ok(()),
        Err(value) => fail(buffer(), Some(bytes), AllocFailure::BadLimit(value)),
    }
}

/// The bytes one buffer may take: `NNC_MEMORY_LIMIT` if set, else the machine's memory if
/// known, else `None` (no budget). An `NNC_MEMORY_LIMIT` that is not a number is returned as the
/// error.
pub fn memory_budget() -> Result<Option<(u64, BudgetSource)>, String> {
    if let Some(value) = std::env::var_os("NNC_MEMORY_LIMIT") {
        let value = value.to_string_lossy().into_owned();
        return match value.trim().parse::<u64>() {
            Ok(bytes) => Ok(Some((bytes, BudgetSource::Environment))),
            Err(_) => Err(value),
        };
    }
    Ok(machine_memory().map(|bytes| (bytes, BudgetSource::MemTotal)))
}

/// The machine's memory in bytes, from `MemTotal` in `/proc/meminfo`; `None` where there is no
/// such file (not Linux) or it cannot be read.
pub fn machine_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total(&meminfo)
}

/// `MemTotal:  24555588 kB` → bytes.
fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let mut fields = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// `40000000000` → `40,000,000,000 bytes (37.3 GiB)`.
pub fn format_bytes(bytes: u128) -> String {
    let digits = bytes.to_string();
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let gib = bytes as f64 / (1u64 << 30) as f64;
    if gib >= 0.1 {
        format!("{grouped} bytes ({gib:.1} GiB)")
    } else {
        format!("{grouped} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_buffers_are_allocated_and_filled() {
        let vector = filled(|| "test".to_string(), 5, 1.5f32).unwrap();
        assert_eq!(vector, [1.5; 5]);
        assert!(filled(|| "empty".to_string(), 0, 0u8).unwrap().is_empty());
    }

    #[test]
    fn impossible_sizes_are_errors_naming_the_buffer() {
        let error = filled(|| "weight `fc.weight`".to_string(), usize::MAX, 0.0f32).unwrap_err();
        assert_eq!(error.reason, AllocFailure::Overflow);
        assert!(
            error.to_string().starts_with("cannot allocate ")
                && error.to_string().contains("for weight `fc.weight`"),
            "{error}"
        );
        // Half the address space: within isize, beyond any machine's memory or the allocator.
        let error = with_capacity::<u8>(|| "the f32 arena".to_string(), isize::MAX as usize / 2)
            .unwrap_err();
        assert!(
            matches!(
                error.reason,
                AllocFailure::OverBudget { .. } | AllocFailure::Refused
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("the f32 arena"), "{error}");
    }

    #[test]
    fn mem_total_is_parsed_in_kilobytes() {
        let meminfo = "MemTotal:       24555588 kB\nMemFree:  100 kB\n";
        assert_eq!(parse_mem_total(meminfo), Some(24_555_588 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn bytes_are_grouped_and_given_in_gib() {
        assert_eq!(
            format_bytes(40_000_000_000),
            "40,000,000,000 bytes (37.3 GiB)"
        );
        assert_eq!(format_bytes(999), "999 bytes");
        assert_eq!(format_bytes(1_000), "1,000 bytes");
    }
}
