//! Compile-time checks: every misuse is a spanned error under the user's
//! tokens; generated code is clean under strict lints. Regenerate the
//! expected output with `TRYBUILD=overwrite cargo test -p ui-tests` and read
//! the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
