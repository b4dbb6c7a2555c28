//! The domain types every layer shares and nothing below imports from above: a run as stored
//! ([`run`]) and an outbox entry ([`outbox`]). Alerts and incidents are in `crate::alert`, audit
//! entries in `crate::audit`; none of them import the engine, chat, tickets or the server.
//! `crate::engine::run` and `crate::outbox::OutboxEntry` re-export these for the code above.

pub mod outbox;
pub mod run;
