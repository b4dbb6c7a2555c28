//! Integrations: folders of manifest + Rhai that add actions without a rebuild
//! (docs/integrations.md).

pub mod auth;
pub mod ioc;
