//! The end-to-end tests: real redis-server processes on 127.0.0.1, the `flashback` binary run
//! as a user runs it. One test binary, one module per subject, rather than one binary per
//! file: each binary links the whole library and its dependency tree again, and 37 of them
//! took five minutes of CI's 2 cores to build (one: about one). Run one subject with
//! `cargo test --release -p flashback --test e2e SUBJECT::` (e.g. `differential::`).
//!
//! `tests/bounded_memory.rs` stays a binary of its own: it counts the process's allocations
//! with a global allocator, which other tests running beside it would disturb.

#[path = "../util/mod.rs"]
mod util;

mod before_event;
mod big_keys;
mod big_values;
mod capture_errors;
mod cloud;
mod cluster;
mod cluster_restore;
mod commands;
mod compact;
mod damage;
mod debug_cli;
mod differential;
mod encryption;
mod evidence;
mod history;
mod history_filter;
mod inspect_cli;
mod key_restore;
mod live_verify;
mod maintenance;
mod marks;
mod parallel_restore;
mod power_loss;
mod prune;
mod rdb_reader;
mod restore_engine;
mod restore_preflight;
mod restore_proof;
mod rolling;
mod s3;
mod sentinel;
mod servers;
mod splice;
mod timeline;
mod tls;
mod topology;
mod ttl;
mod verify;
