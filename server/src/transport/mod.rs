//! Transports move whole frames between a socket or pipe and a `connection`; they know
//! nothing of JSON-RPC. Each one pairs a `FrameSource` with a writer task that drains
//! the connection's outbound queue.

mod handshake;
pub mod stdio;
mod unflushed;
pub mod ws;
