//! Cordon.

pub mod alert;
pub mod intake;
