//! Wire types of sandpool's API: request and response bodies (serde), validation of names,
//! identifiers and bodies, and the error type that renders as Azure's error body.
//!
//! This crate does no I/O; the server and the client both build on it. It must not depend on
//! anything that talks to the network, the disk or the kernel.

pub mod bodies;
mod error;
pub mod types;
pub mod validate;
pub mod wire;

pub use error::{ApiError, ErrorBody};
pub use types::*;
