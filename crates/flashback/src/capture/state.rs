//! The pure capture state machine.
