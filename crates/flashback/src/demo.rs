//! `flashback demo`.
