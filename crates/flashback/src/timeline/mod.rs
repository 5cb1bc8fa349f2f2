//! `flashback timeline` and the events `restore --before/--after EVENT` lands on.
//!
//! - `summarize`: records in, a segment summary out (the capture agent's seal and the
//!   fallback for segments without one use the same code).
//! - `keys`: what a replicated command is (arguments, family, keys touched).

pub mod keys;
pub mod summarize;
