//! A global allocator that counts: the allocations made on the current thread inside
//! `measure`, and the peak of the bytes live in the whole process inside `measure_peak`.
//!
//! The per-thread count lets a test measure one kernel call while the test harness allocates on
//! its other threads; the process-wide peak includes the kernels' worker threads.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Forwards to the system allocator and counts what passes through.
pub struct CountingAllocator;

/// What the current thread allocated inside one `measure` call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allocations {
    /// Calls to `alloc`, `alloc_zeroed` and `realloc`.
    pub count: usize,
    /// The bytes they asked for, in total.
    pub bytes: usize,
    /// The largest single request, in bytes.
    pub largest: usize,
}

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static COUNTS: Cell<Allocations> = const {
        Cell::new(Allocations { count: 0, bytes: 0, largest: 0 })
    };
}

/// Runs `task` and returns what the current thread allocated meanwhile.
#[allow(dead_code)]
pub fn measure<R>(task: impl FnOnce() -> R) -> (R, Allocations) {
    COUNTS.with(|counts| counts.set(Allocations::default()));
    TRACKING.with(|tracking| tracking.set(true));
    let result = task();
    TRACKING.with(|tracking| tracking.set(false));
    (result, COUNTS.with(Cell::get))
}

/// Runs `task` and returns the most bytes that were live at once meanwhile, above those live
/// when it started, across every thread of the process.
#[allow(dead_code)]
pub fn measure_peak<R>(task: impl FnOnce() -> R) -> (R, usize) {
    let start = LIVE_BYTES.load(Ordering::SeqCst);
    PEAK_BYTES.store(start, Ordering::SeqCst);
    let result = task();
    let peak = PEAK_BYTES.load(Ordering::SeqCst);
    (result, peak.saturating_sub(start))
}

fn record(size: usize) {
    let live = LIVE_BYTES.fetch_add(size, Ordering::SeqCst) + size;
    PEAK_BYTES.fetch_max(live, Ordering::SeqCst);
    // `try_with` because the allocator also runs while thread-locals are being torn down.
    let tracking = TRACKING.try_with(Cell::get).unwrap_or(false);
    if tracking {
        let _ = COUNTS.try_with(|counts| {
            let mut value = counts.get();
            value.count += 1;
            value.bytes += size;
            value.largest = value.largest.max(size);
            counts.set(value);
        });
    }
}

fn release(size: usize) {
    LIVE_BYTES.fetch_sub(size, Ordering::SeqCst);
}

// SAFETY: Every method forwards to `System` with the caller's arguments unchanged; the counting
// on the side never allocates (the thread-locals are const-initialised `Cell`s).
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: Forwarded as is; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: Forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        release(layout.size());
        // SAFETY: Forwarded as is.
        unsafe { System.dealloc(pointer, layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        release(layout.size());
        record(new_size);
        // SAFETY: Forwarded as is.
        unsafe { System.realloc(pointer, layout, new_size) }
    }
}
