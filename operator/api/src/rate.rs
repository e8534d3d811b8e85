//! Bandwidth quantities as people write them: `10Gbps`, `500Mbps`, `2.5G`, `800k`.
//!
//! Units are bits per second with SI (decimal) prefixes, as network people mean them:
//! `1G` is 1,000,000,000 bit/s. The same syntax is checked at admission by
//! [`RATE_PATTERN`] and the CEL rule built by [`rate_bounds_rule`], and parsed here.

use std::{fmt, str::FromStr};

/// Schema pattern for a rate: a decimal number, an optional SI prefix (k, M, G, T) and an
/// optional `bps` suffix.
pub const RATE_PATTERN: &str = r"^[0-9]{1,7}(\.[0-9]{1,6})?[kMGT]?(bps)?$";

/// Smallest rate a stream or gateway may declare (1 kbit/s).
pub const MIN_RATE_BPS: u64 = 1_000;
/// Largest rate a stream or gateway may declare (10 Tbit/s).
pub const MAX_RATE_BPS: u64 = 10_000_000_000_000;

/// CEL rule (for a string field holding a rate) enforcing [`MIN_RATE_BPS`]..=[`MAX_RATE_BPS`],
/// using the Kubernetes `quantity` library (a rate without `bps` is a valid quantity).
pub fn rate_bounds_rule() -> String {
    "!isQuantity(self.replace('bps', '')) || (quantity(self.replace('bps', '')).compareTo(quantity('1k')) >= 0 && quantity(self.replace('bps', '')).compareTo(quantity('10T')) <= 0)".to_owned()
}

/// A bandwidth in bits per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Rate(u64);

/// Why a rate string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    /// The text does not follow the syntax.
    #[error("{0:?} is not a rate; write a number with an optional SI prefix and bps, e.g. 10Gbps, 500Mbps or 2.5G")]
    Syntax(String),
    /// The value is outside the accepted bounds.
    #[error("{0:?} is out of range; a rate must be between 1kbps and 10Tbps")]
    OutOfRange(String),
}

impl Rate {
    /// A rate of exactly `bps` bits per second.
    pub const fn from_bps(bps: u64) -> Self {
        Self(bps)
    }

    /// Bits per second.
    pub const fn bps(self) -> u64 {
        self.0
    }

    /// Bytes per second (rounded down).
    pub const fn bytes_per_second(self) -> u64 {
        self.0 / 8
    }

    /// SciStream 1.x clients send rates in kb/s (`Request.rate`); 0 or negative means unset.
    pub fn from_legacy_kbps(kbps: i32) -> Option<Self> {
        u64::try_from(kbps).ok().filter(|k| *k > 0).map(|k| Self(k * 1_000))
    }

    /// Sum of two rates, saturating.
    pub const fn saturating_add(self, other: Rate) -> Rate {
        Rate(self.0.saturating_add(other.0))
    }

    /// Difference of two rates, saturating at zero.
    pub const fn saturating_sub(self, other: Rate) -> Rate {
        Rate(self.0.saturating_sub(other.0))
    }
}

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || RateError::Syntax(text.to_owned());
        let body = text.strip_suffix("bps").unwrap_or(text);
        let (number, multiplier) = match body.as_bytes().last() {
            Some(b'k') => (&body[..body.len() - 1], 1_000u128),
            Some(b'M') => (&body[..body.len() - 1], 1_000_000),
            Some(b'G') => (&body[..body.len() - 1], 1_000_000_000),
            Some(b'T') => (&body[..body.len() - 1], 1_000_000_000_000),
            _ => (body, 1),
        };
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        let digits = |s: &str, max: usize| !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(int_part, 7) || (number.contains('.') && !digits(frac_part, 6)) {
            return Err(syntax());
        }
        // Exact decimal arithmetic: value = int.frac * multiplier, in u128 (no overflow:
        // at most 13 digits times 10^12 times 10^6).
        let scale = 10u128.pow(frac_part.len() as u32);
        let mantissa: u128 = format!("{int_part}{frac_part}").parse().map_err(|_| syntax())?;
        let bps = mantissa * multiplier / scale;
        let bps = u64::try_from(bps).map_err(|_| RateError::OutOfRange(text.to_owned()))?;
        if !(MIN_RATE_BPS..=MAX_RATE_BPS).contains(&bps) {
            return Err(RateError::OutOfRange(text.to_owned()));
        }
        Ok(Self(bps))
    }
}

impl fmt::Display for Rate {
    /// Shortest exact form with the largest SI prefix: `10Gbps`, `2.5Gbps`, `1234bps`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const PREFIXES: [(u64, &str); 4] =
            [(1_000_000_000_000, "T"), (1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")];
        for (scale, prefix) in PREFIXES {
            if self.0 >= scale {
                let int = self.0 / scale;
                let frac = self.0 % scale;
                if frac == 0 {
                    return write!(f, "{int}{prefix}bps");
                }
                let width = scale.ilog10() as usize;
                let frac = format!("{frac:0width$}");
                let frac = frac.trim_end_matches('0');
                if frac.len() <= 6 {
                    return write!(f, "{int}.{frac}{prefix}bps");
                }
            }
        }
        write!(f, "{}bps", self.0)
    }
}

/// Schema pattern for a duration such as `180s`, `3m` or `1h30m` (Go `time.ParseDuration`
/// units without fractions).
pub const DURATION_PATTERN: &str = r"^([0-9]{1,6}(ms|s|m|h)){1,4}$";

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a duration; write e.g. 180s, 3m or 1h30m")]
pub struct DurationError(String);

/// Parses a duration written as in [`DURATION_PATTERN`].
pub fn parse_duration(text: &str) -> Result<std::time::Duration, DurationError> {
    let err = || DurationError(text.to_owned());
    let mut total_ms: u64 = 0;
    let mut rest = text;
    let mut segments = 0;
    if rest.is_empty() {
        return Err(err());
    }
    while !rest.is_empty() {
        segments += 1;
        if segments > 4 {
            return Err(err());
        }
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 6 {
            return Err(err());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let (unit_ms, len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('s') {
            (1_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else {
            return Err(err());
        };
        rest = &rest[len..];
        total_ms = total_ms.saturating_add(value.saturating_mul(unit_ms));
    }
    Ok(std::time::Duration::from_millis(total_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_forms_people_write() {
        let cases = [
            ("10Gbps", 10_000_000_000),
            ("500Mbps", 500_000_000),
            ("2.5G", 2_500_000_000),
            ("800k", 800_000),
            ("1000", 1_000),
            ("10T", 10_000_000_000_000),
            ("0.001G", 1_000_000),
        ];
        for (text, bps) in cases {
            assert_eq!(text.parse::<Rate>(), Ok(Rate::from_bps(bps)), "{text}");
        }
    }

    #[test]
    fn refuses_bad_syntax_and_bounds() {
        for bad in ["", "G", "10 Gbps", "10gbps", "1.Gbps", ".5G", "-1G", "10Gibps", "1e9", "10Gb"] {
            assert!(matches!(bad.parse::<Rate>(), Err(RateError::Syntax(_))), "{bad}");
        }
        for out in ["999", "0", "11T", "0.0000001k"] {
            assert!(
                matches!(out.parse::<Rate>(), Err(RateError::OutOfRange(_)))
                    || matches!(out.parse::<Rate>(), Err(RateError::Syntax(_))),
                "{out}"
            );
        }
        assert!(matches!("11T".parse::<Rate>(), Err(RateError::OutOfRange(_))));
    }

    #[test]
    fn displays_shortest_exact_form() {
        assert_eq!(Rate::from_bps(10_000_000_000).to_string(), "10Gbps");
        assert_eq!(Rate::from_bps(2_500_000_000).to_string(), "2.5Gbps");
        assert_eq!(Rate::from_bps(1_234).to_string(), "1.234kbps");
        assert_eq!(Rate::from_bps(999).to_string(), "999bps");
    }

    #[test]
    fn legacy_kbps() {
        assert_eq!(Rate::from_legacy_kbps(10_000), Some(Rate::from_bps(10_000_000)));
        assert_eq!(Rate::from_legacy_kbps(0), None);
        assert_eq!(Rate::from_legacy_kbps(-5), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("180s").unwrap().as_secs(), 180);
        assert_eq!(parse_duration("3m").unwrap().as_secs(), 180);
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("250ms").unwrap().as_millis(), 250);
        for bad in ["", "3", "s", "1.5s", "3d", "-3s", "3 s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        /// Display then parse is the identity for every rate in bounds.
        #[test]
        fn display_round_trips(bps in MIN_RATE_BPS..=MAX_RATE_BPS) {
            let rate = Rate::from_bps(bps);
            prop_assert_eq!(rate.to_string().parse::<Rate>(), Ok(rate));
        }

        /// The parser and the admission pattern agree on syntax.
        #[test]
        fn parser_agrees_with_schema_pattern(text in "[0-9.kMGTbps]{0,12}") {
            let pattern = regex::Regex::new(RATE_PATTERN).unwrap();
            let parsed = text.parse::<Rate>();
            prop_assert_eq!(pattern.is_match(&text), !matches!(parsed, Err(RateError::Syntax(_))), "{}", text);
        }

        /// Durations: the pattern accepts exactly what the parser accepts.
        #[test]
        fn duration_pattern_agrees(text in "[0-9smh]{0,10}") {
            let pattern = regex::Regex::new(DURATION_PATTERN).unwrap();
            prop_assert_eq!(pattern.is_match(&text), parse_duration(&text).is_ok(), "{}", text);
        }
    }
}
