//! Replica side of the replication protocol.
