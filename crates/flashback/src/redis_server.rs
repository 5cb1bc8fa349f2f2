//! Starting and stopping redis-server processes used as the restore engine.
