//! The JSON body extractor every route uses instead of `web::Json`.
//!
//! On top of `web::Json` (size limit, content type, malformed JSON: see `json_error`), it
//! refuses what serde alone lets through:
//!
//! * a body that is not a JSON object: serde reads a struct from an array too, so
//!   `["short_chat"]` would spend and `[100, "x"]` would adjust;
//! * a NUL character in any string or key: PostgreSQL cannot store one in TEXT (a 500) and
//!   SQLite would store it, so the two backends would differ.
//!
//! Both are 422 with a stable code and, for NUL, the field's path.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, web};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;

/// What a request body checks beyond its shape: length limits, value rules. Each limit is
/// also in the type's OpenAPI schema (`max_length`), so the document tells the truth.
pub trait Validate {
    /// `Err` with a 422 naming the field when a rule is broken.
    fn validate(&self) -> Result<(), ApiError> {
        Ok(())
    }
}

impl Validate for Value {}

/// 422 unless `value` has at most `max` characters.
pub fn max_chars(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.chars().count() > max {
        return Err(ApiError::invalid_field(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(())
}

/// [`max_chars`] for an optional field.
pub fn max_chars_opt(field: &str, value: Option<&String>, max: usize) -> Result<(), ApiError> {
    value.map_or(Ok(()), |v| max_chars(field, v, max))
}

/// A JSON object body deserialized into `T`.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T> Json<T> {
    /// The body.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Json<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + Validate + 'static> FromRequest for Json<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let value = web::Json::<Value>::from_request(req, payload);
        Box::pin(async move {
            let value = value.await?.into_inner();
            let body: T = from_value(value)?;
            body.validate()?;
            Ok(Self(body))
        })
    }
}

/// Checks the shape and the text of a body, then deserializes it.
pub(crate) fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "body_not_object",
            "Body must be an object",
            "the body must be a JSON object",
        ));
    }
    if let Some(field) = nul_path(&value, "") {
        return Err(nul_error(&field));
    }
    let mut value = value;
    whole_numbers(&mut value);
    serde_json::from_value(value).map_err(|err| {
        let message = err.to_string();
        let problem = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "Invalid field",
            message.clone(),
        );
        match crate::field_of(&message) {
            Some(field) => problem.with("field", field),
            None => problem,
        }
    })
}

/// JSON does not tell `3` from `3.0`, and JSON Schema counts both as integers; serde does.
/// A number written with a zero fraction (`3.0`, `-2.00`) becomes the integer it is.
fn whole_numbers(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            let text = n.to_string();
            let whole = text
                .split_once('.')
                .filter(|(_, fraction)| !fraction.is_empty() && fraction.bytes().all(|b| b == b'0'))
                .map(|(integer, _)| integer.to_owned());
            if let Some(integer) = whole {
                if let Ok(i) = integer.parse::<i64>() {
                    *value = Value::from(i);
                } else if let Ok(u) = integer.parse::<u64>() {
                    *value = Value::from(u);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers),
        Value::Object(members) => members.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

/// The 422 for a NUL character in `field`.
pub(crate) fn nul_error(field: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "nul_character",
        "Invalid field",
        format!("`{field}` must not contain a NUL character"),
    )
    .with("field", field)
}

/// The path (`a.b[2]`) of the first string or key holding a NUL character.
fn nul_path(value: &Value, at: &str) -> Option<String> {
    let join = |key: &str| {
        if at.is_empty() {
            key.to_owned()
        } else {
            format!("{at}.{key}")
        }
    };
    match value {
        Value::String(s) if s.contains('\0') => Some(if at.is_empty() {
            "body".to_owned()
        } else {
            at.to_owned()
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_path(item, &format!("{at}[{i}]"))),
        Value::Object(members) => members.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                Some(join(&key.replace('\0', "\\u0000")))
            } else {
                nul_path(item, &join(key))
            }
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Spend {
        action: String,
    }

    #[test]
    fn arrays_and_scalars_are_not_objects() {
        for body in [
            json!(["short_chat"]),
            json!([100, "x"]),
            json!([]),
            json!("x"),
            json!(1),
        ] {
            let err = from_value::<Spend>(body.clone()).unwrap_err();
            assert_eq!(err.code(), "body_not_object", "{body}");
        }
        assert!(from_value::<Spend>(json!({"action": "short_chat"})).is_ok());
    }

    #[test]
    fn whole_numbers_written_as_floats_are_integers() {
        #[derive(Debug, Deserialize)]
        struct Track {
            amount: u64,
            delta: i64,
        }
        let body: Track = from_value(json!({"amount": 34644268.0, "delta": -2.0})).unwrap();
        assert_eq!((body.amount, body.delta), (34_644_268, -2));
        assert!(from_value::<Track>(json!({"amount": 1.5, "delta": 0})).is_err());
    }

    #[test]
    fn a_nul_anywhere_is_refused_with_its_path() {
        let err = from_value::<Value>(json!({"a": {"b": ["ok", "x\u{0}y"]}})).unwrap_err();
        assert_eq!(err.code(), "nul_character");
        assert_eq!(err.member("field"), Some(&json!("a.b[1]")));
        let err = from_value::<Value>(json!({"k\u{0}": 1})).unwrap_err();
        assert_eq!(err.code(), "nul_character");
    }
}
