//! Cordon.

pub mod alert;
pub mod config;
pub mod intake;
