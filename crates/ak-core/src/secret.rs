//! Values that must never reach a log line, a `Debug` dump or the printed configuration.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// What every redacted value prints as.
pub const REDACTED: &str = "[redacted]";

/// A secret string (API key, JWT secret): readable only through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is handed to the code that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::lenient::string(d).map(Secret)
    }
}

/// `scheme://host[:port]` of a URL, with `/…` when a path or query was left out: for URLs
/// that may carry a key anywhere (an MCP server's `/s/<token>` or `?api_key=`), in logs and
/// the printed configuration.
pub fn redacted_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host = authority.rsplit('@').next().unwrap_or(authority);
    let more = rest.len() > authority.len() + 1 || rest.contains('?');
    format!("{scheme}://{host}{}", if more { "/…" } else { "" })
}

/// Serializes a URL as [`redacted_url`] shows it.
pub fn serialize_redacted_url<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redacted_url(url))
}

/// A connection URL that may carry a password (`redis://user:pass@host:6379`).
/// `Debug` and `Serialize` show it with the password replaced.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps a URL.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The URL with its password, for the client that connects.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced, safe to log.
    pub fn redacted(&self) -> String {
        redact_url_password(&self.0)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::lenient::string(d).map(SecretUrl)
    }
}

/// Replaces the password of `scheme://user:password@host...` (or `scheme://:password@host`).
pub fn redact_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let redacted_userinfo = match userinfo.find(':') {
        Some(colon) => format!("{}:{REDACTED}", &userinfo[..colon]),
        // A lone userinfo is a password for Redis (`redis://secret@host`).
        None => REDACTED.to_owned(),
    };
    format!(
        "{}{}@{}",
        &url[..scheme_end + 3],
        redacted_userinfo,
        &rest[at + 1..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_shows_in_debug_or_json() {
        let s = Secret::new("sk-live-123");
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(
            serde_json::to_string(&s).unwrap_or_default(),
            "\"[redacted]\""
        );
        assert_eq!(s.expose(), "sk-live-123");
    }

    #[test]
    fn url_passwords_are_redacted() {
        assert_eq!(
            redact_url_password("redis://user:hunter2@cache:6379/0"),
            "redis://user:[redacted]@cache:6379/0"
        );
        assert_eq!(
            redact_url_password("rediss://:hunter2@cache:6379"),
            "rediss://:[redacted]@cache:6379"
        );
        assert_eq!(
            redact_url_password("redis://hunter2@cache"),
            "redis://[redacted]@cache"
        );
        assert_eq!(
            redact_url_password("redis://localhost:6379"),
            "redis://localhost:6379"
        );
        assert_eq!(
            redact_url_password("redis://cache:6379/?user=a@b"),
            "redis://cache:6379/?user=a@b"
        );
        let url = SecretUrl::new("redis://:pw@h:1");
        assert!(!format!("{url:?}").contains("pw@"));
    }
}
