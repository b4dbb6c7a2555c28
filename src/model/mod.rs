//! The domain types every layer shares and nothing below imports from above: a run as stored
//! ([`run`]), an outbox entry ([`outbox`]), an audit entry and its hash chain ([`audit`]), the kinds
//! of event runs and incidents go through with their typed details ([`event`]), and the rule that
//! deduplicates alerts and groups them into incidents ([`grouping`]). Alerts and incidents are in
//! `crate::alert`; none of them import the engine, chat, tickets or the server.
//! `crate::engine::run`, `crate::outbox::OutboxEntry`, `crate::audit` and `crate::store::Accepted`
//! re-export these for the code above.

pub mod audit;
pub mod event;
pub mod grouping;
pub mod outbox;
pub mod people;
pub mod run;
