//! Conformance runner for exec-server implementations: the transcript language
//! ([`transcript`], [`pattern`]), the runner that plays transcripts against a server
//! through `exec-server-harness` ([`runner`]), and the suite as libtest-mimic trials
//! ([`suite`]), which the `conformance` package's test target runs over every
//! `fixtures/transcripts/**/*.xt`, one trial per transport.

#![warn(missing_docs)]

mod cli;
pub mod expectations;
mod hygiene;
pub mod manifest;
pub mod pattern;
mod profile;
mod record;
pub mod report;
pub mod runner;
mod setup;
pub mod suite;
pub mod transcript;
