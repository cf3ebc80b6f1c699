//! The declaration of a request field ([`Field`]: name, JSON shape, bounds,
//! default, meaning, error code) and the two things done with it: reading it
//! from a body, and describing it in the OpenAPI document. Both go through
//! the same declaration, so they cannot disagree.

use chrono::{DateTime, Datelike, Utc};
use serde_json::{json, Map, Value};

use super::RequestError;
use crate::error_code::ErrorCode;
use crate::settings::Limits;

/// A bound that is either fixed or one of the deployment's limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    At(f64),
    /// `MAX_PROMPT_LEN`.
    MaxPromptLen,
    /// `MAX_DURATION` (the largest over every family).
    MaxDuration,
    /// `MAX_UPLOAD_BYTES`.
    MaxUploadBytes,
    /// The largest `u64` (seeds): kept exact, unlike an f64.
    U64Max,
}

impl Bound {
    fn resolve(self, limits: &Limits) -> f64 {
        match self {
            Bound::At(v) => v,
            Bound::MaxPromptLen => limits.max_prompt_len as f64,
            Bound::MaxDuration => limits.max_duration,
            Bound::MaxUploadBytes => limits.max_upload_bytes as f64,
            Bound::U64Max => u64::MAX as f64,
        }
    }

    fn schema_value(self, limits: &Limits) -> Value {
        match self {
            Bound::U64Max => json!(u64::MAX),
            Bound::MaxPromptLen => json!(limits.max_prompt_len),
            Bound::MaxUploadBytes => json!(limits.max_upload_bytes),
            other => number_json(other.resolve(limits)),
        }
    }
}

/// What JSON a field takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    /// A string of `min_chars..=max_chars` Unicode characters; `printable`
    /// refuses control characters; `blank` (with the code it answers) needs
    /// one character that is not blank or zero-width.
    Text {
        min_chars: usize,
        max_chars: Bound,
        printable: bool,
        blank: Option<ErrorCode>,
    },
    /// An absolute http(s) URL.
    Url,
    /// An RFC 3339 time with a four-digit year.
    Time,
    /// A finite number in `min..=max`.
    Number { min: f64, max: Bound },
    /// An integer in `min..=max` (a float with no fraction is accepted, as
    /// some encoders write every number that way).
    Integer { min: i64, max: Bound },
    /// One of these strings.
    Choice { values: &'static [&'static str] },
    /// A nested object with its own fields.
    Object(&'static [&'static Field]),
}

/// One field of a request body or query, declared once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Field {
    pub name: &'static str,
    /// Documentation for the OpenAPI description.
    pub doc: &'static str,
    pub required: bool,
    pub shape: Shape,
    /// The value used when the field is absent or null (JSON).
    pub default: Option<&'static str>,
    /// An example value (JSON) for the OpenAPI document.
    pub example: Option<&'static str>,
    /// The code a value of the right type but outside the bounds gets.
    pub out_of_range: ErrorCode,
}

impl Field {
    pub(super) fn missing(&self) -> RequestError {
        self.missing_at(self.name)
    }

    /// Missing at `path` (`melody.upload_id` inside a nested object).
    fn missing_at(&self, path: &str) -> RequestError {
        RequestError::new(
            ErrorCode::MissingField,
            Some(path),
            format!("{path} is required"),
        )
    }

    fn wrong_type(&self, path: &str, expected: &str) -> RequestError {
        RequestError::new(
            ErrorCode::InvalidField,
            Some(path),
            format!("{path} must be {expected}"),
        )
    }

    pub(super) fn error(&self, message: String) -> RequestError {
        RequestError::new(self.out_of_range, Some(self.name), message)
    }

    pub(super) fn default_number(&self) -> f64 {
        self.default
            .and_then(|raw| raw.parse::<f64>().ok())
            .unwrap_or_default()
    }

    fn raw<'b>(&self, body: &'b Body<'_>) -> Option<&'b Value> {
        body.object.get(self.name).filter(|v| !v.is_null())
    }

    /// The field's value and its path in the body; `None` when absent or
    /// null, which is an error for a required field.
    fn present<'b>(&self, body: &'b Body<'_>) -> Result<Option<(&'b Value, String)>, RequestError> {
        match self.raw(body) {
            Some(value) => Ok(Some((value, body.path(self.name)))),
            None if self.required => Err(self.missing_at(&body.path(self.name))),
            None => Ok(None),
        }
    }

    pub(super) fn text(
        &self,
        body: &Body<'_>,
        limits: &Limits,
    ) -> Result<Option<String>, RequestError> {
        let Some((value, path)) = self.present(body)? else {
            return Ok(None);
        };
        let Value::String(text) = value else {
            return Err(self.wrong_type(&path, "a string"));
        };
        if let Shape::Text {
            min_chars,
            max_chars,
            printable,
            blank,
        } = self.shape
        {
            let chars = text.chars().count();
            let max = max_chars.resolve(limits) as usize;
            if let Some(code) = blank.filter(|_| !text.chars().any(is_visible)) {
                return Err(RequestError::new(
                    code,
                    Some(&path),
                    format!("{path} must not be empty or blank"),
                ));
            }
            if chars > max {
                return Err(RequestError::new(
                    self.out_of_range,
                    Some(&path),
                    format!("{path} has {chars} characters; the limit is {max}"),
                ));
            }
            if chars < min_chars || (printable && text.chars().any(char::is_control)) {
                return Err(RequestError::new(
                    self.out_of_range,
                    Some(&path),
                    format!("{path} must be {min_chars} to {max} printable characters"),
                ));
            }
        }
        Ok(Some(text.clone()))
    }

    pub(super) fn number(
        &self,
        body: &Body<'_>,
        limits: &Limits,
    ) -> Result<Option<f64>, RequestError> {
        let Some((value, path)) = self.present(body)? else {
            return Ok(None);
        };
        let number = value
            .as_f64()
            .filter(|n| value.is_number() && n.is_finite())
            .ok_or_else(|| self.wrong_type(&path, "a finite number"))?;
        if let Shape::Number { min, max } = self.shape {
            let max = max.resolve(limits);
            if !(min..=max).contains(&number) {
                return Err(RequestError::new(
                    self.out_of_range,
                    Some(&path),
                    format!(
                        "{path} must be {} to {}, not {number}",
                        fmt_num(min),
                        fmt_num(max)
                    ),
                ));
            }
        }
        Ok(Some(number))
    }

    pub(super) fn integer(
        &self,
        body: &Body<'_>,
        limits: &Limits,
    ) -> Result<Option<i128>, RequestError> {
        let Some((value, path)) = self.present(body)? else {
            return Ok(None);
        };
        let Value::Number(n) = value else {
            return Err(self.wrong_type(&path, "an integer"));
        };
        let integer = if let Some(i) = n.as_i64() {
            i128::from(i)
        } else if let Some(u) = n.as_u64() {
            i128::from(u)
        } else {
            match n.as_f64() {
                Some(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e18 => f as i128,
                _ => return Err(self.wrong_type(&path, "an integer")),
            }
        };
        if let Shape::Integer { min, max } = self.shape {
            let max = match max {
                Bound::U64Max => i128::from(u64::MAX),
                Bound::MaxUploadBytes => i128::from(limits.max_upload_bytes),
                other => other.resolve(limits) as i128,
            };
            if !(i128::from(min)..=max).contains(&integer) {
                return Err(RequestError::new(
                    self.out_of_range,
                    Some(&path),
                    format!("{path} must be {min} to {max}, not {integer}"),
                ));
            }
        }
        Ok(Some(integer))
    }

    pub(super) fn choice<T>(
        &self,
        body: &Body<'_>,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, RequestError> {
        let Some((value, path)) = self.present(body)? else {
            return Ok(None);
        };
        let Value::String(raw) = value else {
            return Err(self.wrong_type(&path, "a string"));
        };
        let Shape::Choice { values } = self.shape else {
            return Err(self.wrong_type(&path, "one of the documented values"));
        };
        match parse(raw).filter(|_| values.contains(&raw.as_str())) {
            Some(parsed) => Ok(Some(parsed)),
            None => Err(RequestError::new(
                self.out_of_range,
                Some(&path),
                format!(
                    "{path} must be one of {}, not {raw:?}",
                    values
                        .iter()
                        .map(|v| format!("\"{v}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    pub(super) fn time(&self, body: &Body<'_>) -> Result<Option<DateTime<Utc>>, RequestError> {
        let Some((value, path)) = self.present(body)? else {
            return Ok(None);
        };
        let Value::String(raw) = value else {
            return Err(self.wrong_type(&path, "an RFC 3339 time"));
        };
        let parsed = DateTime::parse_from_rfc3339(raw)
            .ok()
            .map(|t| t.with_timezone(&Utc))
            // Every store keeps years 1..=9999; a time that only parses with
            // an offset pushing it outside is refused here, not by a backend.
            .filter(|t| (MIN_YEAR..=MAX_YEAR).contains(&t.year()));
        parsed.map(Some).ok_or_else(|| {
            RequestError::new(
                self.out_of_range,
                Some(&path),
                format!(
                    "{path} must be an RFC 3339 time from {MIN_YEAR} to {MAX_YEAR}, e.g. 2026-01-31T00:00:00Z"
                ),
            )
        })
    }

    pub(super) fn object<'b>(&self, body: &'b Body<'_>) -> Result<Option<Body<'b>>, RequestError> {
        let Some((value, path)) = self.present(body)? else {
            return Ok(None);
        };
        let Shape::Object(fields) = self.shape else {
            return Err(self.wrong_type(&path, "an object"));
        };
        if !value.is_object() {
            return Err(self.wrong_type(&path, "an object"));
        }
        Body::nested(value, fields, path).map(Some)
    }

    /// This field's JSON schema, with the deployment's limits filled in.
    fn schema(&self, limits: &Limits) -> Value {
        let mut schema = match self.shape {
            Shape::Text {
                min_chars,
                max_chars,
                printable,
                blank,
            } => {
                let min = min_chars.max(usize::from(blank.is_some()));
                let mut s = json!({"type": "string", "minLength": min, "maxLength": max_chars.schema_value(limits)});
                // Patterns in the subset ECMA-262 and Python's `re` share,
                // so schema-driven clients read them as the parser does.
                let mut patterns = Vec::new();
                if printable {
                    patterns.push(format!("^[^{CONTROL}]*$"));
                }
                if blank.is_some() {
                    patterns.push(format!("[^\\s{CONTROL}{INVISIBLE}]"));
                }
                match patterns.as_slice() {
                    [] => {}
                    [one] => s["pattern"] = json!(one),
                    many => {
                        s["allOf"] = json!(many
                            .iter()
                            .map(|p| json!({"pattern": p}))
                            .collect::<Vec<_>>())
                    }
                }
                s
            }
            Shape::Url => json!({"type": "string", "format": "uri"}),
            // A year 0000 is RFC 3339 but refused; the extremes are given
            // as examples so that schema-driven clients try them.
            Shape::Time => json!({
                "type": "string",
                "format": "date-time",
                "pattern": "^(?!0000-)",
                "examples": [
                    format!("{MIN_YEAR:04}-01-01T00:00:00Z"),
                    format!("{MAX_YEAR:04}-12-31T23:59:59Z"),
                ],
            }),
            Shape::Number { min, max } => {
                json!({"type": "number", "minimum": number_json(min), "maximum": max.schema_value(limits)})
            }
            Shape::Integer { min, max } => {
                json!({"type": "integer", "minimum": min, "maximum": max.schema_value(limits)})
            }
            Shape::Choice { values } => json!({"type": "string", "enum": values}),
            Shape::Object(fields) => object_schema(fields, limits),
        };
        if !self.required {
            // OpenAPI 3.1: an optional field may also be sent as null.
            if let Some(kind) = schema.get("type").cloned() {
                schema["type"] = json!([kind, "null"]);
            }
            if let Some(values) = schema.get_mut("enum").and_then(Value::as_array_mut) {
                values.push(Value::Null);
            }
        }
        let mut doc = self.doc.to_owned();
        if self.name == "duration" {
            doc = format!(
                "{doc} At most {} s for audio.",
                Limits::AUDIO_MAX_DURATION.min(limits.max_duration)
            );
        }
        if let Shape::Time = self.shape {
            doc =
                format!("{doc} Its instant must fall in the years {MIN_YEAR} to {MAX_YEAR} (UTC).");
        }
        schema["description"] = json!(doc);
        if let Some(default) = self
            .default
            .and_then(|d| serde_json::from_str::<Value>(d).ok())
        {
            schema["default"] = default;
        }
        if let Some(example) = self
            .example
            .and_then(|e| serde_json::from_str::<Value>(e).ok())
        {
            schema["example"] = example;
        }
        schema
    }
}

const MIN_YEAR: i32 = 1;
const MAX_YEAR: i32 = 9999;

/// A JSON object checked for unknown fields, with the path it sits at.
pub(super) struct Body<'a> {
    object: &'a Map<String, Value>,
    prefix: String,
}

impl<'a> Body<'a> {
    pub(super) fn new(
        value: &'a Value,
        fields: &'static [&'static Field],
    ) -> Result<Self, RequestError> {
        let Some(object) = value.as_object() else {
            return Err(RequestError::new(
                ErrorCode::InvalidBody,
                None,
                "the request body must be a JSON object",
            ));
        };
        Self::checked(object, fields, String::new())
    }

    fn nested(
        value: &'a Value,
        fields: &'static [&'static Field],
        path: String,
    ) -> Result<Self, RequestError> {
        match value.as_object() {
            Some(object) => Self::checked(object, fields, format!("{path}.")),
            None => Err(RequestError::new(
                ErrorCode::InvalidField,
                Some(&path),
                format!("{path} must be an object"),
            )),
        }
    }

    fn checked(
        object: &'a Map<String, Value>,
        fields: &'static [&'static Field],
        prefix: String,
    ) -> Result<Self, RequestError> {
        if let Some(unknown) = object
            .keys()
            .find(|k| !fields.iter().any(|f| f.name == k.as_str()))
        {
            let path = format!("{prefix}{unknown}");
            return Err(RequestError::new(
                ErrorCode::UnknownField,
                Some(&path),
                format!(
                    "unknown field `{path}`; expected one of {}",
                    fields.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        Ok(Self { object, prefix })
    }

    fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The raw value of a field, for the rare check a shape cannot say.
    pub(super) fn get(&self, name: &str) -> Option<&Value> {
        self.object.get(name)
    }
}

/// `char::is_control`'s characters, as a regex class body.
const CONTROL: &str = "\\u0000-\\u001f\\u007f-\\u009f";
/// The zero-width and invisible characters [`is_visible`] refuses besides
/// blanks and controls, as a regex class body.
const INVISIBLE: &str = "\\u00ad\\u180e\\u200b-\\u200f\\u2060-\\u2064\\ufeff";

/// Blank and zero-width characters do not make a prompt.
fn is_visible(c: char) -> bool {
    !(c.is_whitespace()
        || c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{180E}' | '\u{00AD}'
        ))
}

fn number_json(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9e15 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

fn fmt_num(v: f64) -> String {
    number_json(v).to_string()
}

pub(super) fn percent_decode(raw: &str, field: &str) -> Result<String, RequestError> {
    // `+` is a space in a query string; invalid UTF-8 is refused rather
    // than silently replaced, so what is counted is what the client sent.
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| {
            RequestError::new(
                ErrorCode::InvalidQuery,
                Some(field),
                format!("`{field}` is not valid percent-encoded UTF-8"),
            )
        })
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The JSON schema of an object with `fields`, for the OpenAPI document:
/// exactly the fields the parser takes, with the bounds it applies.
pub fn object_schema(fields: &[&Field], limits: &Limits) -> Value {
    let properties: Map<String, Value> = fields
        .iter()
        .map(|f| (f.name.to_owned(), f.schema(limits)))
        .collect();
    let required: Vec<&str> = fields
        .iter()
        .filter(|f| f.required)
        .map(|f| f.name)
        .collect();
    let mut schema = json!({
        "type": "object",
        "properties": properties,
        "additionalProperties": false,
    });
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    schema
}

/// The query parameters of `fields` as OpenAPI parameter objects.
pub fn query_parameters(fields: &[&Field], limits: &Limits) -> Vec<Value> {
    fields
        .iter()
        .map(|f| {
            let mut schema = f.schema(limits);
            let description = schema
                .as_object_mut()
                .and_then(|s| s.remove("description"))
                .unwrap_or(Value::Null);
            json!({
                "name": f.name,
                "in": "query",
                "required": f.required,
                "description": description,
                "schema": schema,
            })
        })
        .collect()
}
