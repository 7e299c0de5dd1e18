//! Shared conformance tests for every Store implementation.
