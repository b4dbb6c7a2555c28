//! Alert intake: authentication, size limits, transport envelopes (SNS) and per-source parsing.

pub mod formats;
pub mod limit;
pub mod router;
pub mod sns;
pub mod verify;
