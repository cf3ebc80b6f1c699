//! The OpenAPI document served at `/v1/openapi.json`.
//!
//! The answers come from the handlers' `#[utoipa::path]` attributes and the
//! domain's `ToSchema` documents. The request bodies and the stats query come
//! from the field declarations the parsers themselves read
//! (`sound_creator_core::request`), filled in with this deployment's limits,
//! so the document states exactly the fields and bounds the server applies.

use serde_json::{json, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use sound_creator_core::error_code::ErrorCode;
use sound_creator_core::ports::{Percentiles, RecentTask};
use sound_creator_core::request::{
    object_schema, query_parameters, GenerationParams, Normalization, OutputFormat, CALL_FIELDS,
    GENERATE_FIELDS, RESULT_FIELDS, STATS_FIELDS, UPLOAD_FIELDS,
};
use sound_creator_core::settings::ServiceSettings;
use sound_creator_core::task::{ModelFamily, TaskError, TaskStatus};
use sound_creator_core::view::{
    ErrorBody, ErrorDocument, HealthDocument, MetricsDocument, ModelDocument, ModelsDocument,
    OutputDocument, QueueDepthDocument, StatsDocument, SubmitDocument, TaskDocument, TaskLinks,
    UploadDocument,
};

#[derive(OpenApi)]
#[openapi(
    info(description = "Text to music (MusicGen) and sound effects (AudioGen) as a job runner."),
    paths(
        super::routes::call,
        super::routes::generate,
        super::routes::result,
        super::routes::result_by_body,
        super::routes::cancel,
        super::routes::stats,
        super::routes::create_upload,
        super::routes::models,
        super::routes::health,
        super::events::events,
    ),
    components(schemas(
        ModelFamily, TaskStatus, TaskError, ErrorCode, GenerationParams, OutputFormat, Normalization,
        SubmitDocument, TaskLinks, TaskDocument, OutputDocument, MetricsDocument, StatsDocument,
        Percentiles, RecentTask, HealthDocument, QueueDepthDocument, ErrorDocument, ErrorBody,
        UploadDocument, ModelDocument, ModelsDocument,
    )),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

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

/// Where each declared body goes: (path, method, component name, fields).
const BODIES: [(&str, &str, &str, &[&sound_creator_core::request::Field]); 4] = [
    ("/v1/call", "post", "CallRequest", CALL_FIELDS),
    ("/v1/generate", "post", "GenerateRequest", GENERATE_FIELDS),
    ("/v1/result", "post", "ResultRequest", RESULT_FIELDS),
    ("/v1/uploads", "post", "UploadRequest", UPLOAD_FIELDS),
];

/// The whole document, for this deployment's settings.
pub fn document(settings: &ServiceSettings) -> Value {
    let mut openapi = ApiDoc::openapi();
    openapi.info.title = settings.api_name.clone();
    openapi.info.version = settings.api_version.clone();
    let mut doc = serde_json::to_value(&openapi).unwrap_or_else(|_| json!({}));
    let limits = &settings.limits;
    for (path, method, name, fields) in BODIES {
        doc["components"]["schemas"][name] = object_schema(fields, limits);
        doc["paths"][path][method]["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}},
        });
    }
    doc["paths"]["/v1/stats"]["get"]["parameters"] = json!(query_parameters(STATS_FIELDS, limits));
    doc
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn settings() -> ServiceSettings {
        sound_creator_settings::from_pairs(&[("MAX_PROMPT_LEN", "77")])
            .expect("settings")
            .service
    }

    fn property_names(schema: &Value) -> BTreeSet<String> {
        schema["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }

    #[test]
    fn the_documented_bodies_are_exactly_the_accepted_fields() {
        let doc = document(&settings());
        for (path, method, name, fields) in BODIES {
            let schema = &doc["components"]["schemas"][name];
            let accepted: BTreeSet<String> = fields.iter().map(|f| f.name.to_owned()).collect();
            assert_eq!(property_names(schema), accepted, "{name}");
            assert_eq!(
                doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
                    ["$ref"],
                json!(format!("#/components/schemas/{name}"))
            );
        }
        let stats: BTreeSet<String> = doc["paths"]["/v1/stats"]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(
            stats,
            STATS_FIELDS.iter().map(|f| f.name.to_owned()).collect()
        );
    }

    #[test]
    fn the_document_carries_the_deployment_limits_and_names() {
        let doc = document(&settings());
        assert_eq!(
            doc["components"]["schemas"]["CallRequest"]["properties"]["prompt"]["maxLength"],
            json!(77)
        );
        assert_eq!(doc["info"]["title"], json!("AudioCraft"));
        let codes = doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .expect("the error codes are listed")
            .len();
        assert_eq!(codes, ErrorCode::ALL.len());
    }
}
