//! Root package: examples, benches, integration tests.
