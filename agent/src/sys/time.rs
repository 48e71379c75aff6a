//! Time as hostnetd stores and shows it: seconds or nanoseconds since the epoch, written
//! and read as RFC 3339 in UTC; and the kernel's boot-time stamps put on the wall clock.
use std::time::{SystemTime, UNIX_EPOCH};

pub const SECOND: u64 = 1_000_000_000;

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Seconds since the epoch as `2026-11-22T10:04:05Z`.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Nanoseconds since the epoch as `2026-11-22T10:04:05.123456789Z`.
pub fn rfc3339_nanos(nanos: u64) -> String {
    let seconds = rfc3339(nanos / 1_000_000_000);
    format!(
        "{}.{:09}Z",
        seconds.trim_end_matches('Z'),
        nanos % 1_000_000_000
    )
}

/// `--since`: RFC 3339 (`2026-11-24T05:00:00Z`, `...05:00:00.5+01:00`) or Unix seconds
/// (`1795359063`, `1795359063.25`), as nanoseconds since the epoch.
pub fn parse_since(text: &str) -> Result<u64, String> {
    let invalid =
        || format!("invalid time {text:?}: give RFC 3339 (2026-11-24T05:00:00Z) or Unix seconds");
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let seconds: u64 = whole.parse().map_err(|_| invalid())?;
        return Ok(seconds * 1_000_000_000 + fraction_nanos(fraction).ok_or_else(invalid)?);
    }
    parse_rfc3339(text).ok_or_else(invalid)
}

fn parse_rfc3339(text: &str) -> Option<u64> {
    let (date, rest) = text.split_once(['T', 't', ' '])?;
    let mut parts = date.splitn(3, '-').map(str::parse::<i64>);
    let (year, month, day) = (
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    );
    let zone_at = rest.find(['Z', 'z', '+', '-'])?;
    let (clock, zone) = rest.split_at(zone_at);
    let (clock, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut hms = clock.splitn(3, ':').map(str::parse::<i64>);
    let (hour, minute, second) = (hms.next()?.ok()?, hms.next()?.ok()?, hms.next()?.ok()?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let offset = zone_offset(zone)?;
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    let seconds = u64::try_from(seconds).ok()?;
    Some(seconds * 1_000_000_000 + fraction_nanos(fraction)?)
}

/// `Z`, `+01:00` or `-05:30` as seconds east of UTC.
fn zone_offset(zone: &str) -> Option<i64> {
    if zone.eq_ignore_ascii_case("z") {
        return Some(0);
    }
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let (hours, minutes) = zone.get(1..)?.split_once(':')?;
    Some(sign * (hours.parse::<i64>().ok()? * 3600 + minutes.parse::<i64>().ok()? * 60))
}

fn fraction_nanos(digits: &str) -> Option<u64> {
    if digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    format!("{digits:0<9}").parse().ok()
}

/// Howard Hinnant's days_from_civil.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the timespec it is given.
    unsafe { libc::clock_gettime(clock, &mut time) };
    time.tv_sec as u64 * SECOND + time.tv_nsec as u64
}

pub fn wall_clock_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// A CLOCK_BOOTTIME reading (what the datapath stamps) on the real-time clock.
pub fn boot_to_wall_ns(boot_ns: u64) -> u64 {
    let offset = wall_clock_ns().saturating_sub(clock_ns(libc::CLOCK_BOOTTIME));
    boot_ns + offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_359_063), "2026-11-22T14:51:03Z");
    }

    #[test]
    fn since_takes_rfc3339_or_unix_seconds() {
        assert_eq!(parse_since("1795359063").unwrap(), 1_795_359_063 * SECOND);
        assert_eq!(
            parse_since("1795359063.25").unwrap(),
            1_795_359_063_250_000_000
        );
        assert_eq!(
            parse_since("2026-11-22T14:51:03Z").unwrap(),
            1_795_359_063 * SECOND
        );
        assert_eq!(
            parse_since("2026-11-22T15:51:03.5+01:00").unwrap(),
            1_795_359_063_500_000_000
        );
        let error = parse_since("yesterday").unwrap_err();
        assert!(
            error.contains("yesterday") && error.contains("RFC 3339"),
            "{error}"
        );
        assert!(parse_since("2026-13-01T00:00:00Z").is_err());
    }
}
