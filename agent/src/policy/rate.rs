//! Per-container bandwidth limits, written as tc(8) writes them: `RATE[:BURST]`.
//!
//! RATE is a number (decimals allowed, `1.5gbit`) and a unit, case-insensitive: bits per
//! second as `bit` (or no unit), `kbit`, `mbit`, `gbit`, `tbit` (x1000) or `kibit` .. `tibit`
//! (x1024); bytes per second as `bps`, `kbps` .. `tbps` (x1000) or `kibps` .. `tibps` (x1024).
//! BURST is a tc size: bytes as `b` (or no unit), `k`/`kb`, `m`/`mb`, `g`/`gb`, or bits as
//! `kbit`, `mbit`, `gbit`; all 1024-based, so `1kbit` is 128 bytes. Both are kept in whole bytes,
//! rounded down as tc rounds them. No whitespace anywhere: tc would not take it either.
//!
//! Without a burst the policer gets the larger of 128 KiB and 20 ms of the rate. It must hold
//! at least one GSO super-packet (64 KiB plus headers) or it drops every large send outright;
//! 20 ms of the rate lets a TCP window keep growing instead of being cut at each burst.
use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// The fastest limit accepted: 10 tbit/s, far above any link a host has.
pub const MAX_BYTES_PER_SECOND: u64 = 1_250_000_000_000;
/// A burst must let at least one full-size Ethernet frame through.
pub const MIN_BURST_BYTES: u64 = 1500;
/// More burst than this is no limit at all.
pub const MAX_BURST_BYTES: u64 = 1 << 30;
/// The smallest burst a policer gets by default: one 64 KiB GSO packet, doubled for headroom.
pub const MIN_DEFAULT_BURST_BYTES: u64 = 128 * 1024;
/// The default burst holds the rate's output over 1/50 s, i.e. 20 ms.
const DEFAULT_BURST_PER_SECOND: u64 = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RateLimit {
    pub bytes_per_second: u64,
    pub burst_bytes: Option<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RateError {
    #[error("{0:?} is not a rate: use a number with a unit as tc writes it (kbit, mbit, gbit, or bytes per second with kbps, mbps), e.g. 200mbit or 200mbit:2mb")]
    NotARate(String),
    #[error("a rate of {0} would stop all traffic: give a rate above zero, e.g. 10mbit, or leave the limit out")]
    ZeroRate(String),
    #[error("a rate of {0} is less than one byte per second: give at least 8bit, e.g. 10mbit")]
    BelowOneByte(String),
    #[error("a rate of {0} is above the largest limit, 10tbit ({MAX_BYTES_PER_SECOND} bytes per second): give at most 10tbit, e.g. 1gbit, or leave the limit out")]
    TooFast(String),
    #[error("{0:?} is not a burst size: use a number of bytes with a unit as tc writes it (b, kb, mb, gb, or kbit, mbit), e.g. 200mbit:64kb")]
    NotABurst(String),
    #[error("burst {text} ({bytes} bytes) is smaller than one MTU ({MIN_BURST_BYTES} bytes): give at least {MIN_BURST_BYTES}b, e.g. 200mbit:64kb")]
    BurstBelowMtu { text: String, bytes: u64 },
    #[error("burst {0} is larger than 1gb ({MAX_BURST_BYTES} bytes): give at most 1gb, e.g. 200mbit:64kb")]
    BurstTooLarge(String),
}

/// tc's rate units, as the number of bits one of them is.
const RATE_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("bit", 1),
    ("kbit", 1_000),
    ("mbit", 1_000_000),
    ("gbit", 1_000_000_000),
    ("tbit", 1_000_000_000_000),
    ("kibit", 1 << 10),
    ("mibit", 1 << 20),
    ("gibit", 1 << 30),
    ("tibit", 1 << 40),
    ("bps", 8),
    ("kbps", 8 * 1_000),
    ("mbps", 8 * 1_000_000),
    ("gbps", 8 * 1_000_000_000),
    ("tbps", 8 * 1_000_000_000_000),
    ("kibps", 8 << 10),
    ("mibps", 8 << 20),
    ("gibps", 8 << 30),
    ("tibps", 8 << 40),
];

/// tc's size units, as the number of bits one of them is.
const SIZE_UNITS: &[(&str, u64)] = &[
    ("", 8),
    ("b", 8),
    ("k", 8 << 10),
    ("kb", 8 << 10),
    ("m", 8 << 20),
    ("mb", 8 << 20),
    ("g", 8 << 30),
    ("gb", 8 << 30),
    ("kbit", 1 << 10),
    ("mbit", 1 << 20),
    ("gbit", 1 << 30),
];

/// The units Display writes, largest first, as the number of bits one of them is.
const RATE_DISPLAY_UNITS: &[(&str, u64)] = &[
    ("gbit", 1_000_000_000),
    ("mbit", 1_000_000),
    ("kbit", 1_000),
    ("bit", 1),
];

/// The units Display writes, largest first, as the number of bytes one of them is.
const SIZE_DISPLAY_UNITS: &[(&str, u64)] =
    &[("gb", 1 << 30), ("mb", 1 << 20), ("kb", 1 << 10), ("b", 1)];

impl RateLimit {
    pub fn bits_per_second(&self) -> u64 {
        self.bytes_per_second.saturating_mul(8)
    }

    /// The burst given, or the larger of 128 KiB and 20 ms at this rate (see the module doc).
    pub fn burst_or_default(&self) -> u64 {
        self.burst_bytes.unwrap_or_else(|| {
            MIN_DEFAULT_BURST_BYTES.max(self.bytes_per_second / DEFAULT_BURST_PER_SECOND)
        })
    }
}

impl FromStr for RateLimit {
    type Err = RateError;

    fn from_str(text: &str) -> Result<Self, RateError> {
        let (rate, burst) = match text.split_once(':') {
            Some((rate, burst)) => (rate, Some(burst)),
            None => (text, None),
        };
        Ok(Self {
            bytes_per_second: parse_rate(rate, text)?,
            burst_bytes: burst.map(parse_burst).transpose()?,
        })
    }
}

/// Malformed text is reported as the whole `limit`, so that an empty RATE (`:2mb`) still shows.
fn parse_rate(text: &str, limit: &str) -> Result<u64, RateError> {
    let not_a_rate = || RateError::NotARate(limit.into());
    let quantity = Quantity::parse(text, RATE_UNITS).ok_or_else(not_a_rate)?;
    if quantity.is_zero() {
        return Err(RateError::ZeroRate(text.into()));
    }
    match quantity.bytes() {
        None => Err(RateError::TooFast(text.into())),
        Some(0) => Err(RateError::BelowOneByte(text.into())),
        Some(bytes) if bytes > u128::from(MAX_BYTES_PER_SECOND) => {
            Err(RateError::TooFast(text.into()))
        }
        Some(bytes) => Ok(bytes as u64),
    }
}

fn parse_burst(text: &str) -> Result<u64, RateError> {
    let not_a_burst = || RateError::NotABurst(text.into());
    let quantity = Quantity::parse(text, SIZE_UNITS).ok_or_else(not_a_burst)?;
    match quantity.bytes() {
        None => Err(RateError::BurstTooLarge(text.into())),
        Some(bytes) if bytes > u128::from(MAX_BURST_BYTES) => {
            Err(RateError::BurstTooLarge(text.into()))
        }
        Some(bytes) if bytes < u128::from(MIN_BURST_BYTES) => Err(RateError::BurstBelowMtu {
            text: text.into(),
            bytes: bytes as u64,
        }),
        Some(bytes) => Ok(bytes as u64),
    }
}

/// `DIGITS[.DIGITS]UNIT`, kept as text so that decimals convert exactly, with no float
/// rounding between what was written and the whole bytes stored.
struct Quantity<'a> {
    whole: &'a str,
    fraction: &'a str,
    bits_per_unit: u64,
}

impl<'a> Quantity<'a> {
    fn parse(text: &'a str, units: &[(&str, u64)]) -> Option<Self> {
        let unit_start = text
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(unit_start);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let all_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        let well_formed = !whole.is_empty()
            && all_digits(whole)
            && all_digits(fraction)
            && (number.len() == whole.len() || !fraction.is_empty());
        let bits_per_unit = units
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(unit))
            .map(|&(_, bits)| bits)?;
        well_formed.then_some(Self {
            whole,
            fraction,
            bits_per_unit,
        })
    }

    fn is_zero(&self) -> bool {
        self.whole
            .bytes()
            .chain(self.fraction.bytes())
            .all(|b| b == b'0')
    }

    /// Whole bytes, rounded down; None when too large to count.
    fn bytes(&self) -> Option<u128> {
        let unit = u128::from(self.bits_per_unit);
        let whole_bits = decimal_digits(self.whole)?.checked_mul(unit)?;
        let bits = whole_bits.checked_add(self.fraction_bits(unit))?;
        // Dropping the fraction's own fraction of a bit cannot change the whole bytes: for a
        // whole number of bits A and 0 <= r < 1, floor((A + r) / 8) == floor(A / 8).
        Some(bits / 8)
    }

    /// The whole bits in `0.FRACTION` of a unit, multiplied digit by digit from the right as on
    /// paper, so a fraction of any length fits.
    fn fraction_bits(&self, unit: u128) -> u128 {
        self.fraction.bytes().rev().fold(0, |carry, digit| {
            (u128::from(digit - b'0') * unit + carry) / 10
        })
    }
}

fn decimal_digits(digits: &str) -> Option<u128> {
    digits.bytes().try_fold(0u128, |value, digit| {
        value.checked_mul(10)?.checked_add(u128::from(digit - b'0'))
    })
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_in_largest_unit(f, self.bits_per_second(), RATE_DISPLAY_UNITS)?;
        if let Some(burst) = self.burst_bytes {
            f.write_str(":")?;
            write_in_largest_unit(f, burst, SIZE_DISPLAY_UNITS)?;
        }
        Ok(())
    }
}

/// Writes `amount` as a whole number of the largest unit that divides it, so it parses back.
fn write_in_largest_unit(
    f: &mut fmt::Formatter<'_>,
    amount: u64,
    units: &[(&str, u64)],
) -> fmt::Result {
    // Every table ends in a unit of 1; a bare number, the fallback, means the same unit anyway.
    let (name, size) = units
        .iter()
        .find(|(_, size)| amount.is_multiple_of(*size))
        .unwrap_or(&("", 1));
    write!(f, "{}{name}", amount / size)
}

impl TryFrom<String> for RateLimit {
    type Error = RateError;

    fn try_from(text: String) -> Result<Self, RateError> {
        text.parse()
    }
}

impl From<RateLimit> for String {
    fn from(limit: RateLimit) -> Self {
        limit.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rate(text: &str) -> u64 {
        let limit: RateLimit = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(limit.burst_bytes, None, "{text}");
        limit.bytes_per_second
    }

    fn burst(text: &str) -> u64 {
        let limit: RateLimit = format!("1mbit:{text}").parse().unwrap();
        limit.burst_bytes.unwrap()
    }

    fn error(text: &str) -> String {
        text.parse::<RateLimit>().unwrap_err().to_string()
    }

    fn assert_mentions(message: &str, words: &[&str]) {
        for word in words {
            assert!(message.contains(word), "{word:?} missing from: {message}");
        }
    }

    #[test]
    fn si_bit_rates_are_thousands_of_bits() {
        assert_eq!(rate("8000"), 1_000);
        assert_eq!(rate("8000bit"), 1_000);
        assert_eq!(rate("8kbit"), 1_000);
        assert_eq!(rate("200mbit"), 25_000_000);
        assert_eq!(rate("1gbit"), 125_000_000);
        assert_eq!(rate("10tbit"), MAX_BYTES_PER_SECOND);
    }

    #[test]
    fn binary_bit_rates_are_powers_of_1024_bits() {
        assert_eq!(rate("8kibit"), 1024);
        assert_eq!(rate("8mibit"), 1 << 20);
        assert_eq!(rate("8gibit"), 1 << 30);
        assert_eq!(rate("1tibit"), 1 << 37);
    }

    #[test]
    fn bps_rates_are_bytes_per_second() {
        assert_eq!(rate("1bps"), 1);
        assert_eq!(rate("500kbps"), 500_000);
        assert_eq!(rate("3mbps"), 3_000_000);
        assert_eq!(rate("2gbps"), 2_000_000_000);
        assert_eq!(rate("1tbps"), 1_000_000_000_000);
        assert_eq!(rate("1kibps"), 1 << 10);
        assert_eq!(rate("1mibps"), 1 << 20);
        assert_eq!(rate("1gibps"), 1 << 30);
        assert_eq!(rate("1tibps"), 1 << 40);
    }

    #[test]
    fn units_ignore_case() {
        assert_eq!(rate("200MBIT"), 25_000_000);
        assert_eq!(rate("200Mbit"), 25_000_000);
        assert_eq!(rate("1KiBps"), 1024);
        assert_eq!(burst("2MB"), 2 << 20);
        assert_eq!(burst("64K"), 64 << 10);
    }

    #[test]
    fn decimals_convert_exactly_and_round_down() {
        assert_eq!(rate("1.5gbit"), 187_500_000);
        assert_eq!(rate("0.5kbps"), 500);
        assert_eq!(rate("12.5bit"), 1);
        assert_eq!(
            rate("1.0000000000000000000000000000000000000000001mbit"),
            125_000
        );
        // Exactly 8 bytes/s, which a truncated or float fraction would round to 7.
        assert_eq!(rate("0.0000000000072759576141834259033203125tibps"), 8);
        assert_eq!(burst("1.5kb"), 1536);
        assert_eq!(burst("1.99999999999999999999999mb"), (2 << 20) - 1);
    }

    #[test]
    fn burst_takes_every_size_unit() {
        let cases = [
            ("1500", 1500),
            ("1500b", 1500),
            ("64k", 64 << 10),
            ("64kb", 64 << 10),
            ("2m", 2 << 20),
            ("2mb", 2 << 20),
            ("1g", 1 << 30),
            ("1gb", 1 << 30),
            ("12kbit", 12 * 128),
            ("1mbit", 128 << 10),
            ("1gbit", 128 << 20),
        ];
        for (text, bytes) in cases {
            assert_eq!(burst(text), bytes, "{text}");
        }
    }

    #[test]
    fn rate_and_burst_parse_together() {
        let limit: RateLimit = "10mbit:2mb".parse().unwrap();
        let expected = RateLimit {
            bytes_per_second: 1_250_000,
            burst_bytes: Some(2 << 20),
        };
        assert_eq!(limit, expected);
    }

    #[test]
    fn text_that_is_not_a_rate_is_named_with_an_example() {
        for text in [
            "12 parsecs",
            "200 mbit",
            " 200mbit",
            "200mbit ",
            "",
            ":2mb",
            "mbit",
            "1.mbit",
            ".5mbit",
            "1.2.3mbit",
            "-5mbit",
            "+5mbit",
            "5e3mbit",
            "200mb",
            "200mbits",
            "200mb:2mb",
        ] {
            let message = error(text);
            assert!(
                message.starts_with(&format!("{text:?} is not a rate")),
                "{message}"
            );
            assert_mentions(&message, &["tc", "kbit", "kbps", "e.g. 200mbit"]);
        }
    }

    #[test]
    fn a_malformed_rate_reads_as_the_brief_shows() {
        assert_eq!(
            error("12 parsecs"),
            "\"12 parsecs\" is not a rate: use a number with a unit as tc writes it (kbit, mbit, gbit, or bytes per second with kbps, mbps), e.g. 200mbit or 200mbit:2mb"
        );
    }

    #[test]
    fn text_that_is_not_a_burst_is_named_with_an_example() {
        for text in [
            "10mbit:",
            "10mbit:2 mb",
            "10mbit:2mbps",
            "10mbit:2mb:3",
            "10mbit:mb",
        ] {
            let message = error(text);
            let burst = text.split_once(':').unwrap().1;
            assert!(
                message.starts_with(&format!("{burst:?} is not a burst size")),
                "{message}"
            );
            assert_mentions(&message, &["tc", "kb", "e.g. 200mbit:64kb"]);
        }
    }

    #[test]
    fn a_zero_rate_is_refused_as_stopping_all_traffic() {
        assert_eq!(
            error("0"),
            "a rate of 0 would stop all traffic: give a rate above zero, e.g. 10mbit, or leave the limit out"
        );
        for text in ["0mbit", "0.000gbit", "00kbps:64kb"] {
            assert_mentions(&error(text), &["would stop all traffic", "e.g. 10mbit"]);
        }
    }

    #[test]
    fn a_rate_under_one_byte_per_second_is_refused() {
        for text in ["7bit", "7", "0.5bps", "0.000001kbit"] {
            let message = error(text);
            assert_mentions(&message, &[text, "less than one byte", "at least 8bit"]);
        }
    }

    #[test]
    fn a_rate_above_10tbit_is_refused() {
        for text in [
            "10.000000001tbit",
            "11tbit",
            "2tbps",
            "99999999999999999999999999999999999999999999gbit",
        ] {
            let message = error(text);
            assert_mentions(&message, &[text, "above the largest limit", "10tbit"]);
        }
    }

    #[test]
    fn a_burst_below_one_mtu_is_refused_naming_the_minimum() {
        assert_eq!(
            error("200mbit:1kb"),
            "burst 1kb (1024 bytes) is smaller than one MTU (1500 bytes): give at least 1500b, e.g. 200mbit:64kb"
        );
        assert_mentions(&error("200mbit:1499"), &["1499", "1500b"]);
        assert_mentions(&error("200mbit:0"), &["(0 bytes)", "1500b"]);
    }

    #[test]
    fn a_burst_above_1gb_is_refused() {
        for text in [
            "1.0001gb",
            "2g",
            "9gbit",
            "99999999999999999999999999999999999999999999gb",
        ] {
            let message = error(&format!("1gbit:{text}"));
            assert_mentions(&message, &[text, "larger than 1gb", "at most 1gb"]);
        }
        assert_eq!(burst("8gbit"), MAX_BURST_BYTES);
    }

    #[test]
    fn display_writes_the_largest_exact_unit() {
        let cases = [
            (25_000_000, None, "200mbit"),
            (187_500_000, None, "1500mbit"),
            (125_000_000, Some(2 << 20), "1gbit:2mb"),
            (MAX_BYTES_PER_SECOND, None, "10000gbit"),
            (1_000, Some(64 << 10), "8kbit:64kb"),
            (1, Some(1500), "8bit:1500b"),
            (1024, Some(1 << 30), "8192bit:1gb"),
            (1_250_000, Some(1536), "10mbit:1536b"),
        ];
        for (bytes_per_second, burst_bytes, text) in cases {
            let limit = RateLimit {
                bytes_per_second,
                burst_bytes,
            };
            assert_eq!(limit.to_string(), text);
        }
    }

    #[test]
    fn default_burst_is_128kib_or_20ms_of_the_rate() {
        let limit = |text: &str| text.parse::<RateLimit>().unwrap();
        assert_eq!(limit("10mbit").burst_or_default(), 128 << 10);
        assert_eq!(limit("1gbit").burst_or_default(), 2_500_000);
        assert_eq!(limit("1gbit:64kb").burst_or_default(), 64 << 10);
        assert_eq!(limit("1gbit").bits_per_second(), 1_000_000_000);
    }

    #[test]
    fn serde_uses_the_text_form() {
        let limit: RateLimit = "1.5gbit:2mb".parse().unwrap();
        let json = serde_json::to_string(&limit).unwrap();
        assert_eq!(json, "\"1500mbit:2mb\"");
        assert_eq!(serde_json::from_str::<RateLimit>(&json).unwrap(), limit);
        let refused = serde_json::from_str::<RateLimit>("\"0\"").unwrap_err();
        assert_mentions(&refused.to_string(), &["would stop all traffic"]);
    }

    fn any_limit() -> impl Strategy<Value = RateLimit> {
        let burst = prop_oneof![
            Just(None),
            (MIN_BURST_BYTES..=MAX_BURST_BYTES).prop_map(Some),
            (2u64..=1024).prop_map(|kib| Some(kib << 10)),
        ];
        let rate = prop_oneof![
            1..=MAX_BYTES_PER_SECOND,
            (1u64..=80_000).prop_map(|mbit| mbit * 125_000),
        ];
        (rate, burst).prop_map(|(bytes_per_second, burst_bytes)| RateLimit {
            bytes_per_second,
            burst_bytes,
        })
    }

    proptest! {
        #[test]
        fn display_parses_back_to_the_same_limit(limit in any_limit()) {
            prop_assert_eq!(limit.to_string().parse::<RateLimit>(), Ok(limit));
        }

        #[test]
        fn json_round_trips(limit in any_limit()) {
            let json = serde_json::to_string(&limit).unwrap();
            prop_assert_eq!(serde_json::from_str::<RateLimit>(&json).unwrap(), limit);
        }

        #[test]
        fn parsing_never_panics(text in "[0-9.:a-zA-Z ]{0,40}") {
            let _ = text.parse::<RateLimit>();
        }
    }
}
