//! The log parser: everything that reads the service logs as a whole.
//!
//! - [`replay`] rebuilds a service's state from its log alone and compares it with the database.
//! - [`lease`] keeps the daemon the one active instance (a Redlock lease it extends while alive).
//!
//! The daemon (`logparser` binary) and the `shoplog` CLI both use this library, so "what a log
//! entry means" is written once.

pub mod lease;
pub mod replay;
