//! Alert intake: authentication (shared secrets, SNS signatures, senders' signed tokens), size
//! limits, transport envelopes (SNS) and per-source parsing.

pub mod formats;
pub mod limit;
pub mod router;
pub mod sender;
pub mod sns;
pub mod verify;
