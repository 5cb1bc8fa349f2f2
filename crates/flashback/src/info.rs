//! `flashback info`.
