//! Shipping: how what capture sealed in its local spool reaches a remote (or encrypted) store,
//! and how only one agent at a time writes a source there.
//!
//! - [`upload`]: the spool → store path (ordered, verified, create-only, retried through an
//!   outage), deleting each spool copy only once its upload is verified.
//! - [`lease`]: the one-writer lease object an agent holds in the store while it uploads.
//!
//! Both lived under `capture/` once; they are here because neither knows the replication
//! stream: they only move sealed objects and guard the store, and `verify` reads the lease too.
//! A local store without encryption needs neither (the agent writes in place and `flock`s).

pub mod lease;
pub mod upload;
