//! Test fixture for exec-server; built out by the harness issue.
