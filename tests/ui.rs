//! What `#[jobq::task]` accepts, and the compile errors it gives for what it
//! refuses. Registered as a test of the `jobq` package, so trybuild resolves
//! paths from `jobq/` and builds the cases against `jobq`'s dependencies.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("../tests/ui/fail/*.rs");
    cases.pass("../tests/ui/pass/*.rs");
}
