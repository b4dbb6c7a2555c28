//! What an attacker tries, one test per attempt, each against the real server on 127.0.0.1:0 (or
//! the real binary) with the real peers. Every test here failed on the code before the trust issue
//! and passes after; the module says which surface it attacks. docs/security.md is the trust model
//! these tests hold Cordon to.

#[path = "../support/mod.rs"]
mod support;

mod audit;
mod chat;
mod credentials;
mod guardrails;
mod matrix;
mod net;
mod people;
mod tickets;
