//! The task message the backend publishes (contract section 2): parsing, validation, and
//! the per-task parameters spheromesh honours.
//!
//! A message that fails [`TaskMessage::parse`] is *malformed*: nobody can be told about it
//! through a callback, so it goes to the dead-letter queue with the [`Malformed`] reason.
//! A well-formed message with a bad parameter (e.g. `threshold: 7`) is a *failed task*:
//! its callback says so.

use serde_json::{Map, Value};

/// A well-formed task message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TaskMessage {
    /// `taskId`, an integer rendered in decimal when it was one.
    pub(crate) task_id: String,
    /// `imageId`, likewise.
    pub(crate) image_id: String,
    /// `imagePath` as sent (resolved later against the uploads root).
    pub(crate) image_path: String,
    /// `callbackUrl`, an http(s) URL.
    pub(crate) callback_url: String,
    /// `parameters`, echoed back unchanged (`{}` when absent or null).
    pub(crate) parameters: Map<String, Value>,
}

/// Why a message is malformed (the dead-letter reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    /// The body is not JSON (or not UTF-8).
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    /// The body is JSON but not an object.
    #[error("body is not a JSON object")]
    NotAnObject,
    /// A required field is absent, null or empty.
    #[error("missing or empty {0}")]
    Missing(&'static str),
    /// A field has the wrong JSON type.
    #[error("{field} must be {expected}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// `callbackUrl` is not an absolute http(s) URL.
    #[error("callbackUrl {0:?} is not an http(s) URL")]
    CallbackUrl(String),
}

/// The segmentation parameters read from `parameters`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TaskParams {
    /// Probability threshold (default 0.5).
    pub(crate) threshold: f32,
    /// Opt-in polygon simplification tolerance in pixels.
    pub(crate) simplify_tolerance: Option<f64>,
}

impl TaskMessage {
    /// Parses and validates a delivery body.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, Malformed> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| Malformed::NotJson(e.to_string()))?;
        let Value::Object(mut obj) = value else {
            return Err(Malformed::NotAnObject);
        };
        let task_id = scalar_id(&obj, "taskId")?;
        let image_id = scalar_id(&obj, "imageId")?;
        let image_path = non_empty_string(&obj, "imagePath")?;
        let callback_url = non_empty_string(&obj, "callbackUrl")?;
        match reqwest::Url::parse(&callback_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => return Err(Malformed::CallbackUrl(callback_url)),
        }
        let parameters = match obj.remove("parameters") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(p)) => p,
            Some(_) => {
                return Err(Malformed::WrongType {
                    field: "parameters",
                    expected: "an object",
                })
            }
        };
        Ok(Self {
            task_id,
            image_id,
            image_path,
            callback_url,
            parameters,
        })
    }

    /// The parameters spheromesh honours; unknown keys are ignored.
    ///
    /// # Errors
    /// A human-readable reason (sent in the `failed` callback) for a threshold outside
    /// (0, 1) or a negative / non-numeric simplification tolerance.
    pub(crate) fn params(&self) -> Result<TaskParams, String> {
        let threshold = match self.parameters.get("threshold") {
            None | Some(Value::Null) => 0.5,
            Some(Value::Number(n)) => match n.as_f64() {
                Some(t) if t > 0.0 && t < 1.0 => t as f32,
                _ => return Err(format!("threshold {n} is outside (0, 1)")),
            },
            Some(other) => return Err(format!("threshold {other} is not a number")),
        };
        let simplify_tolerance = match self.parameters.get("simplify_tolerance") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_f64() {
                Some(t) if t >= 0.0 && t.is_finite() => Some(t),
                _ => return Err(format!("simplify_tolerance {n} is negative")),
            },
            Some(other) => return Err(format!("simplify_tolerance {other} is not a number")),
        };
        Ok(TaskParams {
            threshold,
            simplify_tolerance,
        })
    }
}

/// An id that is a non-empty string or an integer (contract: "opaque JSON scalars").
fn scalar_id(obj: &Map<String, Value>, field: &'static str) -> Result<String, Malformed> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(Malformed::Missing(field)),
        Some(Value::String(s)) if s.trim().is_empty() => Err(Malformed::Missing(field)),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        Some(_) => Err(Malformed::WrongType {
            field,
            expected: "a string or an integer",
        }),
    }
}

fn non_empty_string(obj: &Map<String, Value>, field: &'static str) -> Result<String, Malformed> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(Malformed::Missing(field)),
        Some(Value::String(s)) if s.trim().is_empty() => Err(Malformed::Missing(field)),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(Malformed::WrongType {
            field,
            expected: "a string",
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).expect("serializes")
    }

    fn good() -> Value {
        json!({"taskId": "t-1", "imageId": "i-1", "imagePath": "/ML/uploads/p/a.png",
               "parameters": {"priority": 1, "model_type": "resunet", "threshold": 0.4},
               "retries": 0, "callbackUrl": "http://backend:5001/api/images/i-1/segmentation"})
    }

    #[test]
    fn parses_the_contract_example_and_keeps_parameters_verbatim() {
        let m = TaskMessage::parse(&body(good())).expect("valid");
        assert_eq!(m.task_id, "t-1");
        assert_eq!(m.image_id, "i-1");
        assert_eq!(m.image_path, "/ML/uploads/p/a.png");
        assert_eq!(Value::Object(m.parameters.clone()), good()["parameters"]);
        assert_eq!(m.params().expect("ok").threshold, 0.4);
    }

    #[test]
    fn integer_ids_are_accepted_floats_and_bools_are_not() {
        let mut v = good();
        v["taskId"] = json!(42);
        v["imageId"] = json!(-7);
        let m = TaskMessage::parse(&body(v.clone())).expect("valid");
        assert_eq!((m.task_id.as_str(), m.image_id.as_str()), ("42", "-7"));
        v["taskId"] = json!(4.5);
        assert!(matches!(
            TaskMessage::parse(&body(v.clone())),
            Err(Malformed::WrongType {
                field: "taskId",
                ..
            })
        ));
        v["taskId"] = json!(true);
        assert!(matches!(
            TaskMessage::parse(&body(v)),
            Err(Malformed::WrongType {
                field: "taskId",
                ..
            })
        ));
    }

    #[test]
    fn missing_null_or_empty_required_fields_are_malformed() {
        for field in ["taskId", "imageId", "imagePath", "callbackUrl"] {
            for bad in [None, Some(Value::Null), Some(json!("")), Some(json!("  "))] {
                let mut v = good();
                match bad {
                    None => {
                        v.as_object_mut().expect("object").remove(field);
                    }
                    Some(b) => v[field] = b,
                }
                assert_eq!(
                    TaskMessage::parse(&body(v)),
                    Err(Malformed::Missing(field)),
                    "{field}"
                );
            }
        }
    }

    #[test]
    fn non_json_non_object_and_bad_urls_are_malformed() {
        assert!(matches!(
            TaskMessage::parse(b"{not json"),
            Err(Malformed::NotJson(_))
        ));
        assert!(matches!(
            TaskMessage::parse(&[0xff, 0xfe]),
            Err(Malformed::NotJson(_))
        ));
        assert_eq!(TaskMessage::parse(b"[1,2]"), Err(Malformed::NotAnObject));
        let mut v = good();
        v["callbackUrl"] = json!("/api/images/x/segmentation");
        assert!(matches!(
            TaskMessage::parse(&body(v.clone())),
            Err(Malformed::CallbackUrl(_))
        ));
        v["callbackUrl"] = json!("ftp://backend/x");
        assert!(matches!(
            TaskMessage::parse(&body(v)),
            Err(Malformed::CallbackUrl(_))
        ));
        let mut v = good();
        v["parameters"] = json!([1]);
        assert!(matches!(
            TaskMessage::parse(&body(v)),
            Err(Malformed::WrongType {
                field: "parameters",
                ..
            })
        ));
    }

    #[test]
    fn absent_or_null_parameters_become_an_empty_object_and_defaults() {
        for p in [None, Some(Value::Null)] {
            let mut v = good();
            match p {
                None => {
                    v.as_object_mut().expect("object").remove("parameters");
                }
                Some(p) => v["parameters"] = p,
            }
            let m = TaskMessage::parse(&body(v)).expect("valid");
            assert!(m.parameters.is_empty());
            assert_eq!(
                m.params(),
                Ok(TaskParams {
                    threshold: 0.5,
                    simplify_tolerance: None
                })
            );
        }
    }

    #[test]
    fn bad_parameters_are_task_failures_not_malformed_messages() {
        for (key, value) in [
            ("threshold", json!(0)),
            ("threshold", json!(1.0)),
            ("threshold", json!("0.5")),
            ("simplify_tolerance", json!(-1)),
            ("simplify_tolerance", json!("x")),
        ] {
            let mut v = good();
            v["parameters"][key] = value;
            let m = TaskMessage::parse(&body(v)).expect("well-formed");
            assert!(m.params().is_err(), "{key}");
        }
        let mut v = good();
        v["parameters"]["simplify_tolerance"] = json!(1.5);
        let m = TaskMessage::parse(&body(v)).expect("well-formed");
        assert_eq!(m.params().expect("ok").simplify_tolerance, Some(1.5));
    }
}
