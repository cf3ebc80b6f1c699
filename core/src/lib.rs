//! The sound-creator domain.
//!
//! Tasks and their jobs, the status machine, request validation with the
//! seed's limits, the messages that travel between the API, the workers and
//! the completion step, and the ports (traits) that every backend adapter
//! implements. This crate must never talk to a network, a database or a GPU:
//! everything outside comes in through a port.

pub mod admission;
pub mod audio;
pub mod completion;
pub mod error_code;
pub mod events;
pub mod family;
pub mod final_watch;
pub mod media;
pub mod messages;
pub mod metrics;
pub mod models;
pub mod ports;
pub mod records;
pub mod redact;
pub mod request;
pub mod service;
pub mod settings;
pub mod task;
pub mod upload;
pub mod view;
pub mod webhook;
