//! The domain types every layer shares and nothing below imports from above: a run as stored
//! ([`run`]), an outbox entry ([`outbox`]), and the rule that deduplicates alerts and groups them
//! into incidents ([`grouping`]). Alerts and incidents are in `crate::alert`, audit entries in
//! `crate::audit`; none of them import the engine, chat, tickets or the server.
//! `crate::engine::run`, `crate::outbox::OutboxEntry` and `crate::store::Accepted` re-export these
//! for the code above.

pub mod grouping;
pub mod outbox;
pub mod run;
