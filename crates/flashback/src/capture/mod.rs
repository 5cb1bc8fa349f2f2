//! Capture: attach to a source as a replica and write every record to the store.
pub mod state;
