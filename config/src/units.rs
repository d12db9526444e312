//! Human-readable quantities in the configuration file: byte sizes
//! ([`ByteSize`]) and durations (the [`duration_str`] serde module).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A number of bytes.
///
/// In the configuration file a size is either an integer (bytes) or a
/// string: a number, optional whitespace and an optional unit, the unit
/// matched case-insensitively:
///
/// | unit | bytes |
/// | --- | --- |
/// | `B` or none | 1 |
/// | `KB`, `MB`, `GB`, `TB`, `PB` | 10^3, 10^6, 10^9, 10^12, 10^15 |
/// | `KiB`, `MiB`, `GiB`, `TiB`, `PiB` | 2^10, 2^20, 2^30, 2^40, 2^50 |
///
/// The number may have a fraction (`"1.5GiB"`) as long as the result is a
/// whole number of bytes (`"1.5B"` is rejected). A size is written back
/// (by [`fmt::Display`] and serialization) in the largest unit, binary or
/// decimal, that divides it exactly: `"10GiB"`, `"64MB"`, `"1000KiB"`,
/// `"12345B"`, `"0B"`; every such form parses back to the same value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

/// Units recognized by [`ByteSize`]'s parser, and their sizes in bytes.
const SIZE_UNITS: [(&str, u64); 11] = [
    ("B", 1),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("PB", 1_000_000_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("PiB", 1 << 50),
];

impl ByteSize {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The largest unit that divides the size exactly (bytes for 0).
        let unit = SIZE_UNITS
            .iter()
            .filter(|&&(_, size)| self.0 != 0 && self.0.checked_rem(size) == Some(0))
            .max_by_key(|&&(_, size)| size);
        match unit {
            Some(&(name, size)) => write!(f, "{}{name}", self.0 / size),
            None => write!(f, "{}B", self.0),
        }
    }
}

/// Why a size or duration string was rejected (the `FromStr` error of
/// [`ByteSize`]); its message quotes the text and says what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseUnitError(String);

impl fmt::Display for ParseUnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseUnitError {}

/// Splits `"1.5 GiB"` into the number `"1.5"` and the unit `"GiB"`.
fn split_number(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    (&text[..end], text[end..].trim_start())
}

impl FromStr for ByteSize {
    type Err = ParseUnitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |why: &str| ParseUnitError(format!("invalid size {text:?}: {why}"));
        let (number, unit) = split_number(text.trim());
        let multiplier = SIZE_UNITS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(unit) || (unit.is_empty() && *name == "B"))
            .map(|&(_, size)| size)
            .ok_or_else(|| {
                fail("expected a number and a unit such as B, KB, MB, GB, KiB, MiB, GiB")
            })?;
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty()
            || fraction.contains('.')
            || (number.contains('.') && fraction.is_empty())
        {
            return Err(fail(
                "expected a number and a unit such as B, KB, MB, GB, KiB, MiB, GiB",
            ));
        }
        let too_large = || fail("too large");
        let whole: u128 = whole.parse().map_err(|_| too_large())?;
        let mut bytes = whole
            .checked_mul(u128::from(multiplier))
            .ok_or_else(too_large)?;
        if !fraction.is_empty() {
            let digits = u32::try_from(fraction.len()).map_err(|_| too_large())?;
            let scale = 10u128.checked_pow(digits).ok_or_else(too_large)?;
            let numerator: u128 = fraction.parse().map_err(|_| too_large())?;
            let scaled = numerator
                .checked_mul(u128::from(multiplier))
                .ok_or_else(too_large)?;
            if scaled % scale != 0 {
                return Err(fail("not a whole number of bytes"));
            }
            bytes += scaled / scale;
        }
        u64::try_from(bytes).map(ByteSize).map_err(|_| too_large())
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ByteSizeVisitor)
    }
}

/// Accepts an integer number of bytes or a size string.
struct ByteSizeVisitor;

impl de::Visitor<'_> for ByteSizeVisitor {
    type Value = ByteSize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size: an integer number of bytes or a string such as \"64MiB\"")
    }

    fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<ByteSize, E> {
        Ok(ByteSize(bytes))
    }

    fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<ByteSize, E> {
        u64::try_from(bytes)
            .map(ByteSize)
            .map_err(|_| E::custom(format!("invalid size {bytes}: must not be negative")))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<ByteSize, E> {
        text.parse().map_err(E::custom)
    }
}

/// Duration units: name and length in nanoseconds, largest first.
const DURATION_UNITS: [(&str, u128); 7] = [
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// Parses a duration such as `"10s"`, `"500ms"`, `"2m"`, `"1h"` or a
/// combination such as `"1m30s"` or `"1h 30m"`. Units: `d`, `h`, `m`, `s`,
/// `ms`, `us`, `ns`; each number is a whole number and needs a unit.
pub fn parse_duration(text: &str) -> Result<Duration, ParseUnitError> {
    let fail = |why: &str| ParseUnitError(format!("invalid duration {text:?}: {why}"));
    let expected = "expected a number and a unit such as \"500ms\", \"10s\", \"2m\", \"1h\"";
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(fail(expected));
    }
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let (number, after) = rest.split_at(
            rest.find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len()),
        );
        let after = after.trim_start();
        let (unit, after) = after.split_at(
            after
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(after.len()),
        );
        let size = DURATION_UNITS.iter().find(|(name, _)| *name == unit);
        let (Some(&(_, size)), false) = (size, number.is_empty()) else {
            return Err(fail(expected));
        };
        let value: u128 = number.parse().map_err(|_| fail("too large"))?;
        nanos = value
            .checked_mul(size)
            .and_then(|n| n.checked_add(nanos))
            .ok_or_else(|| fail("too large"))?;
        rest = after.trim_start();
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| fail("too large"))?;
    // The remainder is below 10^9, so it fits a u32.
    let subsec = (nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, subsec))
}

/// Writes a duration in the largest unit that divides it exactly, e.g.
/// `"90s"`, `"2m"`, `"1500ms"`, `"0s"`; [`parse_duration`] reads it back.
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    let (name, size) = DURATION_UNITS
        .iter()
        .find(|&&(_, size)| nanos.checked_rem(size) == Some(0))
        .copied()
        .unwrap_or(("ns", 1));
    format!("{}{name}", nanos / size)
}

/// Serde adapter for [`Duration`] fields: written as a string such as
/// `"10s"` (see [`parse_duration`]); an integer is read as seconds.
pub mod duration_str {
    use super::{format_duration, parse_duration};
    use serde::{de, Deserializer, Serializer};
    use std::fmt;
    use std::time::Duration;

    /// Serializes a duration as a string such as `"10s"`.
    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(*value))
    }

    /// Deserializes a duration string or an integer number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }

    /// Accepts a duration string or an integer number of seconds.
    struct DurationVisitor;

    impl de::Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration: a string such as \"10s\" or an integer number of seconds")
        }

        fn visit_u64<E: de::Error>(self, secs: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(secs))
        }

        fn visit_i64<E: de::Error>(self, secs: i64) -> Result<Duration, E> {
            u64::try_from(secs)
                .map(Duration::from_secs)
                .map_err(|_| E::custom(format!("invalid duration {secs}: must not be negative")))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            parse_duration(text).map_err(E::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_size_parse_table() {
        let cases: [(&str, u64); 14] = [
            ("0", 0),
            ("12345", 12345),
            ("12345B", 12345),
            ("64MB", 64_000_000),
            ("64mb", 64_000_000),
            ("1KB", 1000),
            ("512 KiB", 512 * 1024),
            ("10GiB", 10 << 30),
            ("1.5GiB", 3 << 29),
            ("0.5KiB", 512),
            ("  7 b ", 7),
            ("2TiB", 2 << 40),
            ("3PB", 3_000_000_000_000_000),
            ("16383PiB", 16383 << 50),
        ];
        for (text, bytes) in cases {
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(bytes)), "{text}");
        }
    }

    #[test]
    fn byte_size_rejects_bad_input() {
        for text in [
            "",
            "GiB",
            "10 XB",
            "10GiBs",
            "-1",
            "1.5B",
            "1.",
            ".5KiB",
            "1.2.3MB",
            "1e3",
            "16384PiB",
            "99999999999999999999999999999999999999999",
        ] {
            assert!(text.parse::<ByteSize>().is_err(), "{text:?} accepted");
        }
        let err = "10 XB".parse::<ByteSize>().unwrap_err().to_string();
        assert!(err.contains("\"10 XB\"") && err.contains("GiB"), "{err}");
    }

    #[test]
    fn byte_size_display_table() {
        let cases: [(u64, &str); 11] = [
            (1000 * 1024, "1000KiB"),
            (1000, "1KB"),
            (0, "0B"),
            (1, "1B"),
            (12345, "12345B"),
            (1024, "1KiB"),
            (512 * 1024, "512KiB"),
            (10 << 30, "10GiB"),
            (1536 << 20, "1536MiB"),
            (64_000_000, "64MB"),
            (u64::MAX, "18446744073709551615B"),
        ];
        for (bytes, text) in cases {
            assert_eq!(ByteSize(bytes).to_string(), text);
            assert_eq!(
                text.parse::<ByteSize>(),
                Ok(ByteSize(bytes)),
                "{text} re-read"
            );
        }
    }

    #[test]
    fn duration_parse_and_format() {
        let cases: [(&str, Duration); 10] = [
            ("10 s", Duration::from_secs(10)),
            ("1h 30m", Duration::from_secs(5400)),
            ("10s", Duration::from_secs(10)),
            ("500ms", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("1d", Duration::from_secs(86_400)),
            ("1m30s", Duration::from_secs(90)),
            ("250us", Duration::from_micros(250)),
            ("0s", Duration::ZERO),
        ];
        for (text, duration) in cases {
            assert_eq!(parse_duration(text), Ok(duration), "{text}");
            assert_eq!(
                parse_duration(&format_duration(duration)),
                Ok(duration),
                "{text}"
            );
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::new(1, 1)), "1000000001ns");
        let max = Duration::new(u64::MAX, 999_999_999);
        assert_eq!(parse_duration(&format_duration(max)), Ok(max));
    }

    #[test]
    fn duration_rejects_bad_input() {
        for text in [
            "",
            "10",
            "s",
            "1.5s",
            "10sec",
            "-1s",
            "5y",
            "1h,30m",
            "99999999999999999999999d",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?} accepted");
        }
    }
}
