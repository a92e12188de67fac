//! Deserializers that accept a value however it arrived: environment variables are always text,
//! while YAML turns `secret: 123456` into a number. Each names what it expected on failure.

use serde::de::{Deserialize, Deserializer, Error};
use serde_json::Value;
use std::str::FromStr;

/// Text: strings as they are, numbers and booleans as written.
pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    scalar_to_string(Value::deserialize(d)?).map_err(D::Error::custom)
}

/// Optional text; `null` is absent.
pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v => scalar_to_string(v).map(Some).map_err(D::Error::custom),
    }
}

/// A list of text: a YAML list, or one comma-separated string (`HS256,RS256`).
pub fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .into_iter()
            .map(|v| scalar_to_string(v).map_err(D::Error::custom))
            .collect(),
        Value::String(s) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()),
        v => Err(D::Error::custom(format!(
            "expected a list of text, got {}",
            describe(&v)
        ))),
    }
}

/// An optional list of text ([`string_list`]); absent or `null`: `None`.
pub fn opt_string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        other => string_list(other).map(Some).map_err(D::Error::custom),
    }
}

/// A whole number of at least `min`, from a number or text.
fn whole_number<'de, D: Deserializer<'de>, T>(d: D, min: i64) -> Result<T, D::Error>
where
    T: TryFrom<i64>,
{
    let v = Value::deserialize(d)?;
    let n = match &v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    let expected = || format!("expected a whole number ≥ {min}, got {}", describe(&v));
    let n = n.ok_or_else(|| D::Error::custom(expected()))?;
    if n < min {
        return Err(D::Error::custom(expected()));
    }
    T::try_from(n).map_err(|_| D::Error::custom(format!("{n} is too large")))
}

/// A whole number ≥ 0 (seconds, counts where 0 is meaningful).
pub fn non_negative<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<T, D::Error> {
    whole_number(d, 0)
}

/// A whole number ≥ 1.
pub fn positive<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<T, D::Error> {
    whole_number(d, 1)
}

/// An optional whole number ≥ 1; `null` is absent.
pub fn opt_positive<'de, D: Deserializer<'de>, T: TryFrom<i64>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v => positive(v).map(Some).map_err(D::Error::custom),
    }
}

/// A finite number of seconds ≥ 0, possibly fractional.
pub fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = Value::deserialize(d)?;
    let n = match &v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if n.is_finite() && n >= 0.0 => Ok(n),
        _ => Err(D::Error::custom(format!(
            "expected a number of seconds ≥ 0, got {}",
            describe(&v)
        ))),
    }
}

/// `true` or `false`, from a boolean or text (`true`/`false`, `yes`/`no`, `1`/`0`, any case).
pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = Value::deserialize(d)?;
    let b = match &v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" => Some(true),
            "false" | "no" | "0" | "off" => Some(false),
            _ => None,
        },
        Value::Number(n) => n.as_u64().filter(|n| *n <= 1).map(|n| n == 1),
        _ => None,
    };
    b.ok_or_else(|| D::Error::custom(format!("expected true or false, got {}", describe(&v))))
}

/// Parses a keyword enum from text, case-insensitively.
pub fn keyword<'de, D: Deserializer<'de>, T>(d: D) -> Result<T, D::Error>
where
    T: FromStr<Err = String>,
{
    let v = Value::deserialize(d)?;
    match &v {
        Value::String(s) => T::from_str(s).map_err(D::Error::custom),
        _ => T::from_str(&describe(&v)).map_err(D::Error::custom),
    }
}

fn scalar_to_string(v: Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!("expected text, got {}", describe(&other))),
    }
}

/// A short description of a value for error messages.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing (null)".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a mapping".to_owned(),
    }
}
