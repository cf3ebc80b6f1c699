//! Every error code the service answers with or records on a task: the one
//! place a code is minted, with the HTTP status it answers with and how long
//! a client is asked to wait before trying again.
//!
//! A code is part of the public contract (`{"error": {"code": ...}}` and a
//! failed task's `error.code`), so a variant's wire name never changes once
//! released. Nothing here knows HTTP beyond the status number.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Declares the enum, its wire names and its statuses in one table, so that
/// adding a code cannot forget one of them.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal, $status:expr;)*) => {
        /// An error code of the contract.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $variant,)*
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The wire name, e.g. `prompt_too_long`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                }
            }

            /// The HTTP status a request failing with this code answers with;
            /// `None` for codes that only ever describe a task's outcome.
            pub fn http_status(self) -> Option<u16> {
                match self {
                    $(ErrorCode::$variant => $status,)*
                }
            }

            /// What the code means, for the OpenAPI document and the README.
            pub fn meaning(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => concat!($($doc),*).trim_ascii(),)*
                }
            }
        }
    };
}

error_codes! {
    /// The body is not valid JSON.
    InvalidJson = "invalid_json", Some(400);
    /// The body is JSON but not an object.
    InvalidBody = "invalid_body", Some(400);
    /// A field this route does not take.
    UnknownField = "unknown_field", Some(400);
    /// The same field twice in one object.
    DuplicateField = "duplicate_field", Some(400);
    /// A required field is absent or null.
    MissingField = "missing_field", Some(400);
    /// A field has the wrong JSON type or form.
    InvalidField = "invalid_field", Some(400);
    /// `type` is neither "music" nor "audio".
    InvalidType = "invalid_type", Some(400);
    /// The prompt is empty or only blanks.
    PromptEmpty = "prompt_empty", Some(400);
    /// The prompt has more than MAX_PROMPT_LEN characters.
    PromptTooLong = "prompt_too_long", Some(400);
    /// `duration` is outside what the family allows.
    DurationOutOfRange = "duration_out_of_range", Some(400);
    /// `samples` is outside 1..=4.
    SamplesOutOfRange = "samples_out_of_range", Some(400);
    /// `user_id` is empty, too long or not printable.
    InvalidUserId = "invalid_user_id", Some(400);
    /// A sampling parameter is out of its range.
    ParamOutOfRange = "param_out_of_range", Some(400);
    /// `ttl_seconds` is out of its range.
    TtlOutOfRange = "ttl_out_of_range", Some(400);
    /// `callback_url` is not an http(s) URL.
    InvalidCallbackUrl = "invalid_callback_url", Some(400);
    /// `callback_url`'s host is not on the deployment's allow-list.
    CallbackNotAllowed = "callback_not_allowed", Some(400);
    /// A query parameter is malformed or out of range.
    InvalidQuery = "invalid_query", Some(400);
    /// The task id in the path cannot be read.
    InvalidTaskId = "invalid_task_id", Some(400);
    /// The Idempotency-Key header is not 1 to 255 printable characters.
    InvalidIdempotencyKey = "invalid_idempotency_key", Some(400);
    /// The request line or headers cannot be read.
    BadRequest = "bad_request", Some(400);
    /// An upload's PUT body is shorter than the `bytes` it declared.
    UploadSizeMismatch = "upload_size_mismatch", Some(400);
    /// No valid `Authorization: Bearer <token>`.
    Unauthorized = "unauthorized", Some(401);
    /// A download link's signature does not match.
    InvalidSignature = "invalid_signature", Some(403);
    /// A download link's time is up: read the result again for a fresh one.
    LinkExpired = "link_expired", Some(403);
    /// No such task for this client key.
    TaskNotFound = "task_not_found", Some(404);
    /// No such upload for this client key (unknown, another key's, or past
    /// RESULT_TTL).
    UploadNotFound = "upload_not_found", Some(404);
    /// The task's result is past RESULT_TTL.
    ExpiredResult = "expired_result", Some(404);
    /// No such route or file.
    NotFound = "not_found", Some(404);
    /// The route does not take this method.
    MethodNotAllowed = "method_not_allowed", Some(405);
    /// The request's body did not arrive within HTTP_BODY_TIMEOUT_MS.
    RequestTimeout = "request_timeout", Some(408);
    /// The task is already final (e.g. a cancel after it finished).
    TaskAlreadyFinal = "task_already_final", Some(409);
    /// The Idempotency-Key was used before with another body.
    IdempotencyKeyReused = "idempotency_key_reused", Some(409);
    /// The body is over MAX_BODY_BYTES.
    BodyTooLarge = "body_too_large", Some(413);
    /// An upload declared over MAX_UPLOAD_BYTES, or a PUT longer than it
    /// declared.
    UploadTooLarge = "upload_too_large", Some(413);
    /// The URI is too long.
    UriTooLong = "uri_too_long", Some(414);
    /// The body is not declared as JSON.
    UnsupportedMediaType = "unsupported_media_type", Some(415);
    /// An upload's PUT carries another Content-Type than the one declared.
    UploadTypeMismatch = "upload_type_mismatch", Some(415);
    /// The model family, or the `model` named, is not deployed here.
    ModelNotDeployed = "model_not_deployed", Some(422);
    /// The output format is not one this deployment produces.
    UnsupportedFormat = "unsupported_format", Some(422);
    /// An upload's content type is not one of audio/wav, audio/flac,
    /// audio/mpeg, audio/ogg.
    UnsupportedUploadType = "unsupported_upload_type", Some(422);
    /// The task names an upload whose bytes were never PUT.
    UploadMissing = "upload_missing", Some(422);
    /// A `melody` for a model (or a type) that does not condition on one.
    MelodyNotSupported = "melody_not_supported", Some(422);
    /// Too many requests for this client key (see Retry-After).
    RateLimited = "rate_limited", Some(429);
    /// The family's queue is full (see Retry-After).
    QueueFull = "queue_full", Some(429);
    /// The headers are too large.
    HeadersTooLarge = "headers_too_large", Some(431);
    /// Something failed that the client cannot fix.
    InternalError = "internal_error", Some(500);
    /// A backend is down (see Retry-After).
    BackendUnavailable = "backend_unavailable", Some(503);
    /// The task was not started before its ttl_seconds passed.
    Expired = "expired", None;
    /// The client canceled the task.
    Canceled = "canceled", None;
    /// The model failed while generating (device error, out of memory).
    EngineError = "engine_error", None;
    /// The model cannot serve this request (e.g. too long for it).
    GenerationRejected = "generation_rejected", None;
    /// The melody upload is not audio that can be decoded.
    InvalidMelody = "invalid_melody", None;
    /// The job reached another model family's queue.
    WrongQueue = "wrong_queue", None;
    /// The job was started too many times without finishing.
    JobFailedRepeatedly = "job_failed_repeatedly", None;
}

impl ErrorCode {
    /// Seconds a client is asked to wait (`Retry-After`) before trying again;
    /// `None` where trying again unchanged cannot help.
    pub fn retry_after_seconds(self) -> Option<u64> {
        match self {
            ErrorCode::BackendUnavailable => Some(5),
            ErrorCode::QueueFull => Some(10),
            // The rate limiter computes the real wait; this is its floor.
            ErrorCode::RateLimited => Some(1),
            _ => None,
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_str() == raw)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip_through_serde_and_parse() {
        for &code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).expect("serialises");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(
                serde_json::from_str::<ErrorCode>(&json).expect("reads"),
                code
            );
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
    }

    #[test]
    fn every_code_means_something_and_names_are_unique() {
        let names: std::collections::BTreeSet<_> =
            ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        for &code in ErrorCode::ALL {
            assert!(!code.meaning().is_empty(), "{code}");
        }
    }

    #[test]
    fn only_waiting_helps_codes_carry_a_retry_after() {
        for &code in ErrorCode::ALL {
            let waits = code.retry_after_seconds().is_some();
            assert_eq!(
                waits,
                matches!(code.http_status(), Some(429 | 503)),
                "{code}"
            );
        }
    }
}
