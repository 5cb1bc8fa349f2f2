//! Restore: plan, then serve base + records to a real redis-server, then a sink.
