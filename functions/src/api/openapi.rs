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

use super::{auth, extract};

use sound_creator_core::error_code::ErrorCode;
use sound_creator_core::models::DeployedModel;
use sound_creator_core::ports::{Percentiles, RecentTask};
use sound_creator_core::request::{
    object_schema, query_parameters, GenerationParams, Normalization, OutputFormat, CALL_FIELDS,
    GENERATE_FIELDS, RESULT_FIELDS, STATS_FIELDS, UPLOAD_FIELDS,
};
use sound_creator_core::settings::ServiceSettings;
use sound_creator_core::task::{ModelFamily, TaskError, TaskStatus};
use sound_creator_core::view::{
    ErrorBody, ErrorDocument, FamilyHealthDocument, HealthDocument, MetricsDocument, ModelDocument,
    ModelsDocument, OutputDocument, QueueDepthDocument, StatsDocument, SubmitDocument,
    TaskDocument, TaskLinks, UploadDocument,
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
        Percentiles, RecentTask, HealthDocument, FamilyHealthDocument, QueueDepthDocument, ErrorDocument, ErrorBody,
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

/// The file routes of the embedded mode, where the API serves the signed
/// links itself (in AWS they point at S3).
#[derive(OpenApi)]
#[openapi(paths(super::routes::download, super::routes::upload_file))]
struct FilesDoc;

/// The whole document, for this deployment's settings; `serves_files` when
/// this API serves the signed download and upload links (`/v1/files/...`).
pub fn document(settings: &ServiceSettings, serves_files: bool) -> Value {
    let mut openapi = ApiDoc::openapi();
    if serves_files {
        openapi.merge(FilesDoc::openapi());
    }
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
    for name in ["CallRequest", "GenerateRequest"] {
        narrow_to_deployment(&mut doc["components"]["schemas"][name], settings);
    }
    add_common_answers(&mut doc);
    describe_idempotency_keys(&mut doc);
    describe_event_stream(&mut doc);
    doc
}

/// The `Idempotency-Key` header as the extractor checks it: 1 to 255
/// printable ASCII characters, no leading or trailing blank (HTTP trims them).
fn describe_idempotency_keys(doc: &mut Value) {
    for path in ["/v1/call", "/v1/generate"] {
        let Some(parameters) = doc["paths"][path]["post"]["parameters"].as_array_mut() else {
            continue;
        };
        for parameter in parameters
            .iter_mut()
            .filter(|p| p["name"] == "Idempotency-Key")
        {
            parameter["schema"] = json!({
                "type": "string", "minLength": 1, "maxLength": 255,
                "pattern": "^[!-~]([ -~]*[!-~])?$",
            });
        }
    }
}

/// One server-sent event as a client's parser sees it: its name, its JSON
/// `data` line, and `retry` on the first.
fn describe_event_stream(doc: &mut Value) {
    let content = &mut doc["paths"]["/v1/events/{task_id}"]["get"]["responses"]["200"]["content"]
        ["text/event-stream"];
    if content.is_object() {
        content["schema"] = json!({
            "type": "object",
            "required": ["event", "data"],
            "properties": {
                "event": {"type": "string", "enum": ["status", "progress", "result"]},
                "data": {"type": "string", "description": "The event as JSON: a status, progress or result document"},
                "retry": {"type": "integer", "minimum": 0},
                "id": {"type": "string"},
            },
        });
    }
}

/// The values a submit can take on this deployment, from the same settings
/// the task service checks: only the deployed families, models and (when
/// a melody model is deployed) `melody`; `callback_url` only to the allowed
/// hosts, and not at all when there are none.
fn narrow_to_deployment(schema: &mut Value, settings: &ServiceSettings) {
    let Some(properties) = schema["properties"].as_object_mut() else {
        return;
    };
    let families: Vec<&str> = settings.deployed.iter().map(|f| f.as_str()).collect();
    if let Some(kind) = properties.get_mut("type") {
        kind["enum"] = json!(families);
    }
    let models = settings.models.all();
    let deployed: Vec<&DeployedModel> = models
        .iter()
        .filter(|m| settings.deployed.contains(&m.family))
        .collect();
    if let Some(model) = properties.get_mut("model").filter(|_| !deployed.is_empty()) {
        let mut ids: Vec<Value> = deployed.iter().map(|m| json!(m.id)).collect();
        ids.push(Value::Null);
        if let Some(s) = model.as_object_mut() {
            for bound in ["minLength", "maxLength", "pattern"] {
                s.remove(bound);
            }
        }
        model["enum"] = json!(ids);
    }
    if !deployed.is_empty() && deployed.iter().all(|m| m.melody() == Some(false)) {
        properties.remove("melody");
    }
    let callbacks = &settings.callbacks;
    let mut hosts: Vec<String> = callbacks.allowed_hosts.clone();
    if let Some(host) = callbacks
        .marketplace_callback
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
    {
        hosts.push(host);
    }
    if hosts.is_empty() {
        properties.remove("callback_url");
    } else if let Some(url) = properties.get_mut("callback_url") {
        let alternatives: Vec<String> = hosts.iter().map(|h| regex_escape(h)).collect();
        url["pattern"] = json!(format!(
            "^https?://({})(:[0-9]{{1,5}})?(/[A-Za-z0-9._~/-]*)?$",
            alternatives.join("|")
        ));
    }
}

fn regex_escape(raw: &str) -> String {
    raw.chars()
        .flat_map(|c| {
            let escape = "\\.^$|?*+()[]{}".contains(c);
            escape.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect()
}

/// Answers that do not depend on the handler, added to every operation
/// they apply to: the client-key check and rate limit on every protected
/// route ([`auth::REFUSALS`]), the body reader's on every JSON body
/// ([`extract::JSON_BODY_REFUSALS`]), and `Retry-After` on every status
/// that has a code asking the client to wait.
fn add_common_answers(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for operation in paths.values_mut().filter_map(Value::as_object_mut) {
        for op in operation
            .values_mut()
            .filter(|op| op.get("responses").is_some())
        {
            let mut codes: Vec<ErrorCode> = Vec::new();
            if op.get("security").is_some() {
                codes.extend(auth::REFUSALS);
            }
            let json_body = op["requestBody"]["content"]
                .get("application/json")
                .is_some();
            if json_body {
                codes.extend(extract::JSON_BODY_REFUSALS);
            }
            for code in codes {
                let Some(status) = code.http_status() else {
                    continue;
                };
                let response = &mut op["responses"][status.to_string()];
                if response.is_null() {
                    *response = json!({
                        "description": code.meaning(),
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorDocument"}}},
                    });
                }
            }
            let Some(responses) = op["responses"].as_object_mut() else {
                continue;
            };
            for (status, response) in responses.iter_mut() {
                let waits = ErrorCode::ALL.iter().any(|c| {
                    c.retry_after_seconds().is_some()
                        && c.http_status().map(|s| s.to_string()).as_deref()
                            == Some(status.as_str())
                });
                if waits {
                    response["headers"]["Retry-After"] = json!({
                        "description": "Seconds to wait before trying again.",
                        "required": true,
                        "schema": {"type": "integer", "minimum": 1},
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// A deployment the narrowing keeps every field for: a melody model is
    /// deployed and callbacks may go to one host.
    fn settings() -> ServiceSettings {
        sound_creator_settings::from_pairs(&[
            ("MAX_PROMPT_LEN", "77"),
            ("MUSIC_GEN_MODELS", "facebook/musicgen-melody"),
            ("CALLBACK_ALLOWED_HOSTS", "hooks.example.com"),
        ])
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
        let doc = document(&settings(), true);
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
    fn a_deployment_without_melody_models_or_callback_hosts_documents_neither() {
        let plain = sound_creator_settings::from_pairs(&[])
            .expect("settings")
            .service;
        let doc = document(&plain, true);
        let call = property_names(&doc["components"]["schemas"]["CallRequest"]);
        assert!(
            !call.contains("melody") && !call.contains("callback_url"),
            "{call:?}"
        );
        assert!(
            call.contains("prompt") && call.contains("model"),
            "{call:?}"
        );
        let families = &doc["components"]["schemas"]["CallRequest"]["properties"]["type"]["enum"];
        assert_eq!(families, &json!(["music", "audio"]));
    }

    #[test]
    fn the_idempotency_key_and_the_event_stream_are_described_as_checked() {
        let doc = document(&settings(), true);
        let key = doc["paths"]["/v1/call"]["post"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .find(|p| p["name"] == "Idempotency-Key")
            .expect("the header is documented")
            .clone();
        assert_eq!(key["schema"]["maxLength"], json!(255));
        let event = &doc["paths"]["/v1/events/{task_id}"]["get"]["responses"]["200"]["content"]
            ["text/event-stream"]["schema"];
        assert_eq!(
            event["properties"]["event"]["enum"],
            json!(["status", "progress", "result"])
        );
    }

    #[test]
    fn the_document_carries_the_deployment_limits_and_names() {
        let doc = document(&settings(), true);
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
