//! Proptest settings shared by the property tests.

use proptest::test_runner::{Config, FileFailurePersistence};

/// `cases` random cases, with the seeds of past failures kept beside the
/// test's source file (`<file>.proptest-regressions`) and replayed first.
/// Proptest's default would put them in a `proptest-regressions/` tree
/// parallel to the binary's root, away from the file they belong to.
pub fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}
