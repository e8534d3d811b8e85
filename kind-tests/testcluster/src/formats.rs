//! The `format`s a CRD schema may use, checked as the API server does;
//! unknown formats pass. Pure logic.

use serde_json::Value;

/// Checks a `format` the API server knows; unknown formats pass.
pub fn format_ok(format: &str, v: &Value) -> bool {
    match (format, v) {
        ("int32", Value::Number(n)) => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
        ("int64", Value::Number(n)) => n.as_i64().is_some(),
        ("date-time", Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
        ("date", Value::String(s)) => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
        ("int-or-string", Value::String(_)) => true,
        ("int-or-string", Value::Number(n)) => n.as_i64().is_some(),
        ("ipv4", Value::String(s)) => s.parse::<std::net::Ipv4Addr>().is_ok(),
        ("ipv6", Value::String(s)) => s.parse::<std::net::Ipv6Addr>().is_ok(),
        ("cidr", Value::String(s)) => s.split_once('/').is_some_and(|(ip, len)| {
            let max = match ip.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(_)) => 32,
                Ok(std::net::IpAddr::V6(_)) => 128,
                Err(_) => return false,
            };
            len.parse::<u8>().is_ok_and(|l| l <= max)
        }),
        ("uuid", Value::String(s)) => {
            matches_re(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$", s)
        }
        ("duration", Value::String(s)) => s == "0" || matches_re(r"^[-+]?([0-9]*(\.[0-9]*)?(ns|us|µs|ms|s|m|h))+$", s),
        ("byte", Value::String(s)) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(s).is_ok()
        }
        _ => true,
    }
}

pub(crate) fn matches_re(re: &str, s: &str) -> bool {
    regex::Regex::new(re).is_ok_and(|r| r.is_match(s))
}
