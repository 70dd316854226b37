//! JSON request bodies: size-limited, strictly parsed, validated before a handler sees them.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{web, FromRequest, HttpRequest};
use domain::FieldError;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use validator::{Validate, ValidationErrors, ValidationErrorsKind};

use crate::error::{ApiError, ApiResult};

/// The largest request body accepted, in bytes (`ITSM_MAX_BODY_BYTES`).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A request body parsed into `T` and checked with `validator`.
///
/// Malformed JSON is 400; an unknown field, a missing field, a wrong type or an invalid value is
/// 422 naming the field; a body over the limit is 413; another content type is 415.
pub struct ValidJson<T>(pub T);

impl<T: DeserializeOwned + Validate + 'static> FromRequest for ValidJson<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = ApiResult<Self>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<web::Data<BodyLimit>>()
            .map_or(1 << 20, |l| l.0);
        let content_type_ok = is_json_content_type(req);
        let payload = payload.take();
        let req = req.clone();
        Box::pin(async move {
            // The caller's refusal, if any, is answered before anything about the body.
            crate::auth::credential_read(&req).await;
            if !content_type_ok {
                return Err(ApiError::UnsupportedMediaType(
                    "the request body must be application/json".into(),
                ));
            }
            let body = read_body(payload, limit).await?;
            reject_nul_characters(&body)?;
            let value: T = parse_json(&body)?;
            value.validate().map_err(validation_problem)?;
            Ok(ValidJson(value))
        })
    }
}

fn is_json_content_type(req: &HttpRequest) -> bool {
    let Some(value) = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Reads the whole body, refusing it as soon as it passes `limit`.
pub async fn read_body(mut payload: Payload, limit: usize) -> ApiResult<Bytes> {
    let too_large = || ApiError::PayloadTooLarge(format!("the request body exceeds {limit} bytes"));
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::Malformed(format!("cannot read the request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// No text we store may hold NUL (PostgreSQL cannot, and no client means it); in JSON it can
/// only arrive escaped, so the body is searched only when the escape is present.
fn reject_nul_characters(body: &[u8]) -> ApiResult<()> {
    if !body.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
        return Ok(());
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Ok(()); // malformed: parse_json reports it
    };
    match nul_path(&value, String::new()) {
        Some(path) => Err(ApiError::invalid(path, "must not contain NUL characters")),
        None => Ok(()),
    }
}

/// The path of the first string (or key) holding NUL, in the `a.b[0]` form errors use.
fn nul_path(value: &serde_json::Value, path: String) -> Option<String> {
    let or_body = |path: String| {
        if path.is_empty() {
            "body".to_owned()
        } else {
            path
        }
    };
    match value {
        serde_json::Value::String(text) if text.contains('\0') => Some(or_body(path)),
        serde_json::Value::Array(items) => items.iter().enumerate().find_map(|(index, item)| {
            nul_path(item, format!("{}[{index}]", or_body(path.clone())))
        }),
        serde_json::Value::Object(fields) => fields.iter().find_map(|(name, item)| {
            let child = if path.is_empty() {
                name.replace('\0', "")
            } else {
                format!("{path}.{}", name.replace('\0', ""))
            };
            if name.contains('\0') {
                Some(child)
            } else {
                nul_path(item, child)
            }
        }),
        _ => None,
    }
}

/// Parses JSON, telling malformed syntax (400) from well-formed but wrong content (422).
///
/// A number with a zero fraction (`699.0`) is an integer in JSON Schema, so an integer field
/// takes it: when serde refuses such a float, the body is read again with those numbers as
/// integers (only then, so the usual path stays one pass).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(value) => value,
        Err(error)
            if error
                .inner()
                .to_string()
                .contains("invalid type: floating point") =>
        {
            let mut tree: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
                ApiError::Malformed(format!("the request body is not valid JSON: {e}"))
            })?;
            integral_floats_as_integers(&mut tree);
            return serde_path_to_error::deserialize(tree).map_err(|error| {
                let path = error.path().to_string();
                let message = strip_position(&error.into_inner().to_string());
                ApiError::invalid(field_of(&path, &message), message)
            });
        }
        Err(error) => {
            let path = error.path().to_string();
            let inner = error.into_inner();
            return Err(match inner.classify() {
                serde_json::error::Category::Data => {
                    let message = strip_position(&inner.to_string());
                    ApiError::invalid(field_of(&path, &message), message)
                }
                _ => ApiError::Malformed(format!("the request body is not valid JSON: {inner}")),
            });
        }
    };
    deserializer
        .end()
        .map_err(|e| ApiError::Malformed(format!("the request body is not valid JSON: {e}")))?;
    Ok(value)
}

/// Rewrites every float with a zero fraction that fits an `i64` as that integer.
fn integral_floats_as_integers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(number) if number.is_f64() => {
            if let Some(float) = number.as_f64() {
                // i64::MAX as f64 rounds up to 2^63, which does not fit: compare below it.
                if float.fract() == 0.0
                    && (-9.223_372_036_854_775e18..9.223_372_036_854_775e18).contains(&float)
                {
                    #[allow(clippy::cast_possible_truncation)]
                    let integer = float as i64;
                    *number = integer.into();
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        serde_json::Value::Object(fields) => {
            fields.values_mut().for_each(integral_floats_as_integers)
        }
        _ => {}
    }
}

/// serde names an unknown or missing field in its message, not in the path.
fn field_of(path: &str, message: &str) -> String {
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    match (path, named) {
        // serde_path_to_error already includes an unknown field in the path.
        (path, Some(name)) if path == name || path.ends_with(&format!(".{name}")) => {
            path.to_owned()
        }
        (".", Some(name)) => name.to_owned(),
        (parent, Some(name)) => format!("{parent}.{name}"),
        (".", None) => "body".to_owned(),
        (path, None) => path.to_owned(),
    }
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// Turns `validator`'s nested errors into a flat list of `{field, message}`.
pub fn validation_problem(errors: ValidationErrors) -> ApiError {
    let mut flat = Vec::new();
    flatten(&errors, "", &mut flat);
    flat.sort_by(|a, b| a.field.cmp(&b.field));
    ApiError::from_field_errors(flat)
}

fn flatten(errors: &ValidationErrors, prefix: &str, out: &mut Vec<FieldError>) {
    for (field, kind) in errors.errors() {
        let path = if prefix.is_empty() {
            field.to_string()
        } else {
            format!("{prefix}.{field}")
        };
        match kind {
            ValidationErrorsKind::Field(list) => {
                for error in list {
                    let message = error
                        .message
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_else(|| default_message(&error.code, error));
                    out.push(FieldError::new(path.clone(), message));
                }
            }
            ValidationErrorsKind::Struct(inner) => flatten(inner, &path, out),
            ValidationErrorsKind::List(items) => {
                for (index, inner) in items {
                    flatten(inner, &format!("{path}[{index}]"), out);
                }
            }
        }
    }
}

fn default_message(code: &str, error: &validator::ValidationError) -> String {
    let param = |name: &str| error.params.get(name).map(ToString::to_string);
    match code {
        "length" => match (param("min"), param("max")) {
            (Some(min), Some(max)) => format!("must be {min} to {max} characters long"),
            (None, Some(max)) => format!("must be at most {max} characters long"),
            (Some(min), None) => format!("must be at least {min} characters long"),
            _ => "has an invalid length".to_owned(),
        },
        "email" => "must be an email address".to_owned(),
        "range" => match (param("min"), param("max")) {
            (Some(min), Some(max)) => format!("must be between {min} and {max}"),
            _ => "is out of range".to_owned(),
        },
        other => format!("is invalid ({other})"),
    }
}

/// For merge-patch fields that cannot be cleared: absent is `None`, `null` is a 422.
pub fn required<'de, T, D>(deserializer: D) -> Result<Option<T>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// For merge-patch fields that may be set to null: absent is `None`, `null` is `Some(None)`.
pub fn nullable<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        title: String,
        count: Option<u32>,
    }

    fn field_error(result: ApiResult<Body>) -> (String, String) {
        match result {
            Err(ApiError::Invalid { errors, .. }) => {
                (errors[0].field.clone(), errors[0].message.clone())
            }
            other => panic!("expected a 422, got {other:?}"),
        }
    }

    #[test]
    fn malformed_json_is_a_bad_request() {
        assert!(matches!(
            parse_json::<Body>(b"{\"title\": "),
            Err(ApiError::Malformed(_))
        ));
        assert!(matches!(
            parse_json::<Body>(br#"{"title": "x"} trailing"#),
            Err(ApiError::Malformed(_))
        ));
    }

    #[test]
    fn wrong_content_names_the_field() {
        assert_eq!(
            field_error(parse_json(br#"{"title": "x", "extra": 1}"#)).0,
            "extra"
        );
        assert_eq!(field_error(parse_json(br#"{}"#)).0, "title");
        assert_eq!(
            field_error(parse_json(br#"{"title": "x", "count": -1}"#)).0,
            "count"
        );
    }
}
