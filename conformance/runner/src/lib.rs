//! Conformance runner for exec-server implementations: the transcript language
//! ([`transcript`], [`pattern`]) and the runner that plays transcripts against a server
//! through `exec-server-harness` ([`runner`]). The `conformance` test target
//! (`tests/conformance.rs`) turns every `fixtures/transcripts/**/*.xt` into one
//! libtest trial per transport.

#![warn(missing_docs)]

pub mod cli;
pub mod hygiene;
pub mod pattern;
pub mod profile;
pub mod runner;
pub mod suite;
pub mod transcript;
