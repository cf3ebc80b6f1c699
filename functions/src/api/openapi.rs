//! The OpenAPI document, generated from the handlers' `#[utoipa::path]`
//! attributes and the domain's `ToSchema` types. The request schemas below
//! only describe the bodies: parsing and checking stay in the domain
//! (`sound_creator_core::request`), so a body the schema allows but the
//! limits forbid still gets the contract's error.

use serde::Deserialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use sound_creator_core::ports::{Percentiles, RecentTask};
use sound_creator_core::request::{AudioFormat, GenerationParams};
use sound_creator_core::task::{ModelFamily, TaskError, TaskStatus};
use sound_creator_core::view::{
    ErrorBody, ErrorDocument, HealthDocument, MetricsDocument, OutputDocument, QueueDepthDocument,
    StatsDocument, SubmitDocument, TaskDocument, TaskLinks,
};

/// Body of `POST /v1/call`.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // read by the schema generator only
pub struct CallRequestSchema {
    /// "music" (MusicGen) or "audio" (AudioGen).
    #[serde(rename = "type")]
    family: ModelFamily,
    /// At most MAX_PROMPT_LEN characters (default 100), counted in Unicode characters.
    #[schema(example = "lofi hip hop beat with warm piano")]
    prompt: String,
    /// Seconds, > 0 and <= MAX_DURATION (default 30); audio is capped at 10.
    #[schema(example = 8)]
    duration: f64,
    /// Clips to generate, 1..=4 (default 1); each is a job, results aggregated in order.
    samples: Option<u8>,
    /// The marketplace's end user; used for stats.
    user_id: String,
    params: Option<GenerationParams>,
    /// Default "wav" (16-bit PCM).
    format: Option<AudioFormat>,
    /// Only hosts on the deployment's allow-list (CALLBACK_ALLOWED_HOSTS, MARKETPLACE_CALLBACK's host).
    callback_url: Option<String>,
    /// Queue deadline: not started by then => "expired".
    ttl_seconds: Option<u64>,
}

/// Body of `POST /v1/generate`: the call body plus `wait_seconds`.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct GenerateRequestSchema {
    #[serde(flatten)]
    call: CallRequestSchema,
    /// How long to wait for the result (default 30, at most 60).
    wait_seconds: Option<f64>,
}

/// Body of `POST /v1/result` (the seed's form).
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct ResultRequestSchema {
    task_id: String,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "sound-creator", description = "Text to music (MusicGen) and sound effects (AudioGen) as a job runner."),
    paths(
        super::routes::call,
        super::routes::generate,
        super::routes::result,
        super::routes::result_by_body,
        super::routes::cancel,
        super::routes::stats,
        super::routes::health,
    ),
    components(schemas(
        CallRequestSchema, GenerateRequestSchema, ResultRequestSchema, ModelFamily, TaskStatus, TaskError,
        GenerationParams, AudioFormat, SubmitDocument, TaskLinks, TaskDocument, OutputDocument, MetricsDocument,
        StatsDocument, Percentiles, RecentTask, HealthDocument, QueueDepthDocument, ErrorDocument, ErrorBody,
    )),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub fn document(version: &str) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = version.to_owned();
    doc
}
