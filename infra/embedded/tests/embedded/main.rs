//! The embedded backends against real SQLite files and directories in a
//! temporary data directory.

// Test helpers (not only #[test] functions) may unwrap: a failure is the
// test failing, with the panic message pointing at the line.
#![allow(clippy::unwrap_used)]

mod blobs;
mod cache;
mod persistence;
mod queue;
mod stats;
mod support;
mod tasks;
mod uploads;
