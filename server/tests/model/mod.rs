//! The session model of `session_model.rs`: the client's operations and their strategy
//! (`ops`), the pure model that turns them into steps and the answers the protocol
//! requires (`plan`), the matcher those answers are checked with (`pattern`, the
//! conformance runner's rules), and the transcript writer (`xt`).

pub mod ops;
pub mod pattern;
pub mod plan;
pub mod xt;
