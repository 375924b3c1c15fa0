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
        Ok(()) => {
            advise_huge_pages(vector.as_ptr(), vector.capacity() * element_bytes);
            Ok(vector)
        }
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
    fn aligned_buffers_start_on_a_cache_line() {
        for length in [0, 1, 3, 16, 17, 1000] {
            let floats = AlignedBuffer::<f32>::zeroed(length);
            let integers = AlignedBuffer::<i64>::try_zeroed(|| "test".to_string(), length).unwrap();
            assert_eq!(floats.as_ptr() as usize % ALIGN_BYTES, 0);
            assert_eq!(integers.as_ptr() as usize % ALIGN_BYTES, 0);
            assert!(floats.iter().all(|&x| x == 0.0) && floats.len() == length);
            assert!(integers.iter().all(|&x| x == 0) && integers.len() == length);
            let copy = integers.clone();
            assert_eq!(copy.as_ptr() as usize % ALIGN_BYTES, 0);
            assert_eq!(*copy, *integers);
            let mut grown = floats.clone();
            grown.resize(length * 3 + 5);
            assert_eq!(grown.as_ptr() as usize % ALIGN_BYTES, 0);
            assert_eq!(grown.len(), length * 3 + 5);
        }
        let error =
            AlignedBuffer::<f32>::try_zeroed(|| "the arena".to_string(), usize::MAX).unwrap_err();
        assert!(error.to_string().contains("the arena"), "{error}");
    }

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

    /// Buffers large enough for whole huge pages, at any offset from a huge page boundary, and
    /// ones too small for any, keep their values (the hint changes only how they are backed).
    #[test]
    fn buffers_advised_to_use_huge_pages_keep_their_values() {
        for length in [1, 1000, (2 << 20) / 4 - 1, (5 << 20) / 4 + 3] {
            let mut buffer = AlignedBuffer::<f32>::zeroed(length);
            assert!(buffer.as_slice().iter().all(|&value| value == 0.0));
            for (index, value) in buffer.as_mut_slice().iter_mut().enumerate() {
                *value = index as f32;
            }
            let copy = buffer.clone();
            assert!(
                copy.as_slice()
                    .iter()
                    .enumerate()
                    .all(|(i, &v)| v == i as f32)
            );
            let vector = filled(|| "a test buffer".to_string(), length, 1.5f32).unwrap();
            assert!(vector.iter().all(|&value| value == 1.5));
        }
        // A range holding no whole huge page, and an empty one, are left alone.
        let small = [0u8; 64];
        advise_huge_pages(small.as_ptr(), small.len());
        advise_huge_pages(std::ptr::null::<u8>(), 0);
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

/// The size of a transparent huge page (x86-64 and most aarch64 kernels).
const HUGE_PAGE_BYTES: usize = 2 << 20;

/// Asks Linux to back the whole huge pages inside `bytes` bytes from `start` with transparent
/// huge pages when they are first touched (`madvise(MADV_HUGEPAGE)`): under THP's `madvise`
/// mode, a common default, only regions that ask get them. Weights and arenas are streamed
/// through page after page, and with 4 KB pages each page costs a TLB miss (the STLB covers
/// 8 MB; ResNet-18's weights are 47 MB). A hint: where the kernel refuses it or has no THP,
/// the memory simply stays in small pages. Does nothing elsewhere than Linux.
fn advise_huge_pages<T>(start: *const T, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        let first = (start as usize).next_multiple_of(HUGE_PAGE_BYTES);
        let end = (start as usize).saturating_add(bytes) / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES;
        if end > first {
            // SAFETY: `madvise` with `MADV_HUGEPAGE` only changes how the kernel backs the pages
            // of `[first, end)`, which lie inside the caller's allocation of `bytes` bytes from
            // `start` (rounded inwards to whole huge pages); it never changes their contents or
            // their mapping's validity, and an error (EINVAL without THP) is ignored.
            unsafe {
                libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (start, bytes, HUGE_PAGE_BYTES);
}

/// Bytes an [`AlignedBuffer`]'s first element is aligned to: a cache line, and the width of an
/// AVX-512 vector.
pub const ALIGN_BYTES: usize = 64;

/// A slice whose first element sits on an [`ALIGN_BYTES`] boundary, so that full-width vector
/// loads from aligned offsets never straddle two cache lines: the GEMM's packed panels (each
/// 16-float panel row of B is one line) and the arenas of generated code (whose memory plan puts
/// every value at a multiple of 64 bytes; an f32 depthwise convolution on MobileNetV2's
/// 14x14x576 map took 55 us with its input 16 bytes off a line, 35 us aligned). It holds up to
/// `ALIGN_BYTES` more to get there.
#[derive(Debug, Default)]
pub struct AlignedBuffer<T = f32> {
    storage: Vec<T>,
    /// Elements of `storage` before the aligned first one.
    offset: usize,
    length: usize,
}

impl<T: Clone + Default> AlignedBuffer<T> {
    /// Elements past `length` that leave room to align the start (`T` is f32 or i64, whose
    /// alignment is their size, a divisor of `ALIGN_BYTES`).
    const SLACK: usize = ALIGN_BYTES / std::mem::size_of::<T>();

    /// `length` zeros (or `T::default()`s).
    pub fn zeroed(length: usize) -> Self {
        let mut buffer = Self {
            storage: Vec::new(),
            offset: 0,
            length: 0,
        };
        buffer.resize(length);
        buffer
    }

    /// [`AlignedBuffer::zeroed`], or an error naming `buffer` when it does not fit in memory
    /// (see [`filled`]).
    pub fn try_zeroed(buffer: impl FnOnce() -> String, length: usize) -> Result<Self, AllocError> {
        let storage = filled(buffer, length.saturating_add(Self::SLACK), T::default())?;
        Ok(Self::aligned(storage, length))
    }

    /// Makes room for `length` elements; the contents are unspecified afterwards.
    pub fn resize(&mut self, length: usize) {
        if self.storage.len() < length + Self::SLACK {
            let count = length + Self::SLACK;
            let mut storage = Vec::with_capacity(count);
            advise_huge_pages(storage.as_ptr(), count * std::mem::size_of::<T>());
            storage.resize(count, T::default());
            self.storage = storage;
        }
        *self = Self::aligned(std::mem::take(&mut self.storage), length);
    }

    /// `storage`, of at least `length + SLACK` elements, from its first aligned element.
    fn aligned(storage: Vec<T>, length: usize) -> Self {
        let offset = storage.as_ptr().align_offset(ALIGN_BYTES);
        Self {
            offset: if offset < Self::SLACK { offset } else { 0 },
            storage,
            length,
        }
    }

    pub fn as_slice(&self) -> &[T] {
        &self.storage[self.offset..][..self.length]
    }

    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.storage[self.offset..][..self.length]
    }
}

/// A copy aligned on its own (a derived clone would keep the offset of the original's storage).
impl<T: Clone + Default> Clone for AlignedBuffer<T> {
    fn clone(&self) -> Self {
        let mut copy = Self::zeroed(self.length);
        copy.as_mut_slice().clone_from_slice(self.as_slice());
        copy
    }
}

impl<T: Clone + Default> std::ops::Deref for AlignedBuffer<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Clone + Default> std::ops::DerefMut for AlignedBuffer<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.as_mut_slice()
    }
}
