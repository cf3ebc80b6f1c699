//! The embedded backends against real SQLite files and directories in a
//! temporary data directory.

mod blobs;
mod cache;
mod persistence;
mod queue;
mod stats;
mod support;
mod tasks;
