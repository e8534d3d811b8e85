//! A value as a person wrote it in a spec: parsed once when the object is read, kept in the
//! form it was written, so the operator works with a typed value while `kubectl get` shows
//! (and a client that writes the object back keeps) exactly what the user wrote.
//!
//! In the CRD schema a [`Written`] field is a string; the field's own `#[schemars(...)]`
//! pattern and its CEL rule refuse at admission what [`FromStr`] would refuse here, so a
//! stored object always parses.

use std::{fmt, ops::Deref, str::FromStr, time::Duration};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `T` together with the text it was parsed from.
#[derive(Clone, Debug)]
pub struct Written<T> {
    text: String,
    value: T,
}

impl<T> Written<T> {
    /// The text as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The parsed value.
    pub fn value(&self) -> &T {
        &self.value
    }
}

impl<T: Copy> Written<T> {
    /// The parsed value, copied.
    pub fn get(&self) -> T {
        self.value
    }
}

impl<T: FromStr> Written<T> {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Self, T::Err> {
        Ok(Self { value: text.parse()?, text: text.to_owned() })
    }
}

impl<T: fmt::Display> From<T> for Written<T> {
    /// A value written in its canonical form (its `Display`).
    fn from(value: T) -> Self {
        Self { text: value.to_string(), value }
    }
}

impl<T> Deref for Written<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

/// Equal when the values are (`10Gbps` and `10G` are the same rate).
impl<T: PartialEq> PartialEq for Written<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T: fmt::Display> fmt::Display for Written<T> {
    /// The value in its canonical form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<T> Serialize for Written<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de, T> Deserialize<'de> for Written<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl<T> JsonSchema for Written<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        // Inlined as `{"type": "string"}` like the `String` it replaces, so the field's own
        // pattern and length attributes land on it and the CRD does not change.
        String::schema_name()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        String::json_schema(generator)
    }
}

/// How long to wait for Hello: a duration between 1 s and 24 h (`spec.helloTimeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HelloTimeout(Duration);

impl HelloTimeout {
    /// Shortest accepted.
    pub const MIN: Duration = Duration::from_secs(1);
    /// Longest accepted.
    pub const MAX: Duration = Duration::from_secs(24 * 3600);
    /// SciStream 1.x's wait, the default.
    pub const DEFAULT: HelloTimeout = HelloTimeout(Duration::from_secs(180));

    /// The duration.
    pub const fn duration(self) -> Duration {
        self.0
    }
}

impl Default for HelloTimeout {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a Hello timeout was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloTimeoutError {
    /// Not a duration.
    #[error(transparent)]
    Syntax(#[from] crate::rate::DurationError),
    /// Outside 1s..=24h.
    #[error("{0:?} is out of range; helloTimeout must be between 1s and 24h")]
    OutOfRange(String),
}

impl FromStr for HelloTimeout {
    type Err = HelloTimeoutError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let d = crate::rate::parse_duration(text)?;
        if !(Self::MIN..=Self::MAX).contains(&d) {
            return Err(HelloTimeoutError::OutOfRange(text.to_owned()));
        }
        Ok(Self(d))
    }
}

impl fmt::Display for HelloTimeout {
    /// Whole seconds (`180s`), or milliseconds when there is a fraction (`1500ms`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.subsec_millis() == 0 {
            write!(f, "{}s", self.0.as_secs())
        } else {
            write!(f, "{}ms", self.0.as_millis())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rate;

    #[test]
    fn keeps_the_text_and_compares_values() {
        let written: Written<Rate> = serde_json::from_value(serde_json::json!("2.5G")).unwrap();
        assert_eq!(written.bps(), 2_500_000_000);
        assert_eq!(serde_json::to_value(&written).unwrap(), serde_json::json!("2.5G"));
        assert_eq!(written.to_string(), "2.5Gbps");
        assert_eq!(written, Written::from(Rate::from_bps(2_500_000_000)));
        let e = serde_json::from_value::<Written<Rate>>(serde_json::json!("fast")).unwrap_err().to_string();
        assert!(e.contains("is not a rate"), "{e}");
    }

    #[test]
    fn hello_timeouts_within_bounds() {
        assert_eq!("3m".parse::<HelloTimeout>().unwrap().duration(), Duration::from_secs(180));
        assert_eq!(HelloTimeout::DEFAULT.to_string(), "180s");
        assert_eq!("1500ms".parse::<HelloTimeout>().unwrap().to_string(), "1500ms");
        assert!(matches!("25h".parse::<HelloTimeout>(), Err(HelloTimeoutError::OutOfRange(_))));
        assert!(matches!("500ms".parse::<HelloTimeout>(), Err(HelloTimeoutError::OutOfRange(_))));
        assert!(matches!("soon".parse::<HelloTimeout>(), Err(HelloTimeoutError::Syntax(_))));
    }
}
