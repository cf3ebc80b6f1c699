//! The HTTP API (one axum Router) and the Lambda entry points.
