//! Helpers shared by the kernels' property tests: value generators and tolerant comparison.

use proptest::prelude::*;

/// A vector of `length` values in [-2, 2].
pub(crate) fn values(length: usize) -> impl Strategy<Value = Vec<f32>> {
    proptest::collection::vec(-2.0f32..2.0, length)
}

/// Asserts `|actual - expected| <= tolerance * max(1, |expected|)` element by element.
#[track_caller]
pub(crate) fn assert_close(actual: &[f32], expected: &[f32], tolerance: f32) {
    assert_eq!(actual.len(), expected.len(), "lengths differ");
    for (index, (&actual, &expected)) in actual.iter().zip(expected).enumerate() {
        let bound = tolerance * expected.abs().max(1.0);
        let both_nan = actual.is_nan() && expected.is_nan();
        assert!(
            both_nan || (actual - expected).abs() <= bound || actual == expected,
            "element {index}: got {actual}, expected {expected} (tolerance {bound})"
        );
    }
}

/// Held by tests that change the global thread count and check it, so that tests running at
/// the same time do not change it under them.
pub(crate) static THREAD_COUNT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes [`THREAD_COUNT_LOCK`], whatever a panicking holder left behind.
pub(crate) fn lock_thread_count() -> std::sync::MutexGuard<'static, ()> {
    THREAD_COUNT_LOCK
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
}
