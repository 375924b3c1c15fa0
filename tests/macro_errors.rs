//! `network!` errors point at the offending token: trybuild compile-fail cases, one per error.
//!
//! The expected compiler output is in `tests/ui/*.stderr`; regenerate it with
//! `TRYBUILD=overwrite cargo test --test macro_errors` and review the diff.

#[test]
fn macro_errors_point_at_the_offending_token() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
