//! Cordon.

pub mod alert;
pub mod api;
pub mod app;
pub mod config;
pub mod http;
pub mod intake;
pub mod store;
pub mod telemetry;
