//! The service's settings, read from the environment with the seed's names
//! (`MAX_PROMPT_LEN`, `MAX_DURATION`, `MARKETPLACE_TOKEN`, ...).
//!
//! Only domain settings live here; each backend adapter reads its own
//! (`REDIS_HOST`, `POSTGRES_USER`, ...). Secrets are held in types whose
//! `Debug` output is redacted, so a settings dump in a log leaks nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use subtle::ConstantTimeEq;

use crate::request::Limits;
use crate::task::{ModelFamily, Tenant};
use crate::webhook::{SecretError, WebhookSecret};

/// A bearer token, compared in constant time and never printed.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    pub fn new(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    pub fn matches(&self, presented: &str) -> bool {
        // ct_eq on slices of different lengths returns false without
        // comparing contents; the length of a token is not a secret worth
        // hiding, its bytes are.
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The client keys: `MARKETPLACE_TOKEN` (tenant `marketplace`) and the
/// `name:token` pairs of `API_KEYS`.
#[derive(Debug, Clone, Default)]
pub struct ClientKeys(Vec<(Tenant, Token)>);

impl ClientKeys {
    pub fn new(keys: Vec<(Tenant, Token)>) -> Self {
        Self(keys)
    }

    /// The tenant whose token this is. Every key is compared (no early exit)
    /// so the time taken does not tell which key came close.
    pub fn tenant_for(&self, presented: &str) -> Option<Tenant> {
        let mut found = None;
        for (tenant, token) in &self.0 {
            if token.matches(presented) && found.is_none() {
                found = Some(tenant.clone());
            }
        }
        found
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub api_name: String,
    pub api_version: String,
    pub port: u16,
    pub limits: Limits,
    pub client_keys: ClientKeys,
    pub marketplace_callback: Option<String>,
    pub webhook_secret: Option<WebhookSecret>,
    /// How long a finished task stays readable (`RESULT_TTL`).
    pub result_ttl: Duration,
    /// How long a presigned download URL is valid.
    pub url_ttl: Duration,
    /// How long a stage result stays in the result cache.
    pub stage_cache_ttl: Duration,
    /// How long the final result stays in the result cache.
    pub final_cache_ttl: Duration,
    pub callback_retry_base: Duration,
    pub callback_max_attempts: u32,
    pub callback_timeout: Duration,
    pub max_body_bytes: usize,
    /// Submits are refused with 429 once this many jobs wait in a family's queue.
    pub max_queued_jobs: Option<u64>,
    /// Per client key; 0 turns the limit off.
    pub rate_limit_per_minute: u32,
    /// Families this deployment serves; others answer 422.
    pub deployed: BTreeSet<ModelFamily>,
    pub music_gen_model: String,
    pub audio_gen_model: String,
    pub cache_model_dir: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("setting {name}: {message}")]
pub struct SettingsError {
    pub name: &'static str,
    pub message: String,
}

impl Settings {
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let mut keys = Vec::new();
        if let Some(token) = get("MARKETPLACE_TOKEN") {
            keys.push((Tenant::new("marketplace"), Token::new(token)));
        }
        if let Some(raw) = get("API_KEYS") {
            for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let Some((name, token)) = pair.split_once(':') else {
                    return Err(SettingsError {
                        name: "API_KEYS",
                        message: "expected name:token pairs separated by commas".into(),
                    });
                };
                if name.is_empty() || token.is_empty() {
                    return Err(SettingsError {
                        name: "API_KEYS",
                        message: "a name or token is empty".into(),
                    });
                }
                keys.push((Tenant::new(name.trim()), Token::new(token.trim())));
            }
        }

        let webhook_secret = match get("WEBHOOK_SECRET") {
            None => None,
            Some(raw) => {
                Some(
                    WebhookSecret::parse(&raw).map_err(|e: SecretError| SettingsError {
                        name: "WEBHOOK_SECRET",
                        message: e.to_string(),
                    })?,
                )
            }
        };

        let marketplace_callback = get("MARKETPLACE_CALLBACK");
        if let Some(url) = &marketplace_callback {
            let parsed = url::Url::parse(url).map_err(|e| SettingsError {
                name: "MARKETPLACE_CALLBACK",
                message: e.to_string(),
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(SettingsError {
                    name: "MARKETPLACE_CALLBACK",
                    message: "must be an http(s) URL".into(),
                });
            }
        }

        let callback_allowed_hosts = get("CALLBACK_ALLOWED_HOSTS")
            .map(|raw| {
                raw.split(',')
                    .map(|h| h.trim().to_ascii_lowercase())
                    .filter(|h| !h.is_empty())
                    .collect()
            })
            .unwrap_or_default();

        let deployed = match get("DEPLOYED_TYPES") {
            // MusicGen only by default: AudioGen's published checkpoint is in
            // AudioCraft's own format, which the engine does not load yet.
            None => [ModelFamily::Music].into_iter().collect(),
            Some(raw) => raw
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    ModelFamily::parse(s).ok_or_else(|| SettingsError {
                        name: "DEPLOYED_TYPES",
                        message: format!("unknown type {s:?}; use music and/or audio"),
                    })
                })
                .collect::<Result<_, _>>()?,
        };

        let max_queued = number::<u64>(&get, "MAX_QUEUED_JOBS", 0)?;

        Ok(Self {
            api_name: get("API_NAME").unwrap_or_else(|| "AudioCraft".into()),
            api_version: get("API_VERSION").unwrap_or_else(|| env!("CARGO_PKG_VERSION").into()),
            port: number(&get, "APP_API_PORT", 8007)?,
            limits: Limits {
                max_prompt_len: number(&get, "MAX_PROMPT_LEN", 100)?,
                max_duration: positive(&get, "MAX_DURATION", 30.0)?,
                callback_allowed_hosts,
                ..Limits::default()
            },
            client_keys: ClientKeys::new(keys),
            marketplace_callback,
            webhook_secret,
            result_ttl: seconds(&get, "RESULT_TTL", 604_800)?,
            url_ttl: seconds(&get, "URL_TTL", 3600)?,
            stage_cache_ttl: seconds(&get, "STAGE_CACHE_TTL", 3600)?,
            final_cache_ttl: seconds(&get, "FINAL_CACHE_TTL", 86_400)?,
            callback_retry_base: Duration::from_millis(number(
                &get,
                "CALLBACK_RETRY_BASE_MS",
                20_000,
            )?),
            callback_max_attempts: number(&get, "CALLBACK_MAX_ATTEMPTS", 6)?,
            callback_timeout: Duration::from_millis(number(&get, "CALLBACK_TIMEOUT_MS", 10_000)?),
            max_body_bytes: number(&get, "MAX_BODY_BYTES", 65_536)?,
            max_queued_jobs: (max_queued > 0).then_some(max_queued),
            rate_limit_per_minute: number(&get, "RATE_LIMIT_PER_MINUTE", 0)?,
            deployed,
            music_gen_model: get("MUSIC_GEN_MODEL")
                .unwrap_or_else(|| "facebook/musicgen-small".into()),
            audio_gen_model: get("AUDIO_GEN_MODEL")
                .unwrap_or_else(|| "facebook/audiogen-medium".into()),
            cache_model_dir: get("CACHE_MODEL_DIR").unwrap_or_else(|| "model_hub".into()),
        })
    }
}

fn number<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, SettingsError> {
    match get(name) {
        None => Ok(default),
        Some(raw) => raw.parse().map_err(|_| SettingsError {
            name,
            message: format!("{raw:?} is not a valid non-negative number"),
        }),
    }
}

fn positive(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: f64,
) -> Result<f64, SettingsError> {
    let value: f64 = number(get, name, default)?;
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(SettingsError {
            name,
            message: "must be a positive number".into(),
        })
    }
}

fn seconds(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u64,
) -> Result<Duration, SettingsError> {
    Ok(Duration::from_secs(number(get, name, default)?))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn the_seed_defaults_apply_when_nothing_is_set() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.port, 8007);
        assert_eq!(s.limits.max_prompt_len, 100);
        assert_eq!(s.limits.max_duration, 30.0);
        assert_eq!(s.music_gen_model, "facebook/musicgen-small");
        assert_eq!(s.audio_gen_model, "facebook/audiogen-medium");
        assert_eq!(s.result_ttl, Duration::from_secs(604_800));
        assert_eq!(s.max_body_bytes, 65_536);
        assert_eq!(s.deployed, [ModelFamily::Music].into_iter().collect());
    }

    #[test]
    fn marketplace_token_and_api_keys_are_separate_tenants() {
        let s = settings(&[
            ("MARKETPLACE_TOKEN", "m-secret"),
            ("API_KEYS", "acme:a-secret, beta:b-secret"),
        ])
        .unwrap();
        assert_eq!(
            s.client_keys.tenant_for("m-secret"),
            Some(Tenant::new("marketplace"))
        );
        assert_eq!(
            s.client_keys.tenant_for("b-secret"),
            Some(Tenant::new("beta"))
        );
        assert_eq!(s.client_keys.tenant_for("b-secre"), None);
        assert_eq!(s.client_keys.tenant_for(""), None);
    }

    #[test]
    fn malformed_settings_name_the_variable() {
        assert_eq!(
            settings(&[("MAX_PROMPT_LEN", "lots")]).unwrap_err().name,
            "MAX_PROMPT_LEN"
        );
        assert_eq!(
            settings(&[("API_KEYS", "no-colon")]).unwrap_err().name,
            "API_KEYS"
        );
        assert_eq!(
            settings(&[("WEBHOOK_SECRET", "whsec_???")])
                .unwrap_err()
                .name,
            "WEBHOOK_SECRET"
        );
        assert_eq!(
            settings(&[("MAX_DURATION", "-3")]).unwrap_err().name,
            "MAX_DURATION"
        );
        assert_eq!(
            settings(&[("DEPLOYED_TYPES", "video")]).unwrap_err().name,
            "DEPLOYED_TYPES"
        );
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let s = settings(&[
            ("MARKETPLACE_TOKEN", "super-secret-token"),
            ("WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ])
        .unwrap();
        let dump = format!("{s:?}");
        assert!(!dump.contains("super-secret-token"));
        assert!(!dump.contains("MfKQ9r8"));
    }
}
