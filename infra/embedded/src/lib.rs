//! Embedded backends: SQLite for tasks, stats and a durable job queue; local files for audio.
