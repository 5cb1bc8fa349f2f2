//! Time syntax of the command line.
