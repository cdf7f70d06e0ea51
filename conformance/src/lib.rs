//! Conformance runner for exec-server implementations; built out by the conformance issue.
