//! Time syntax of the command line: instants (`--at`, `--from`, `--to`) and durations
//! (`--keep`).
//!
//! Every instant becomes milliseconds since the Unix epoch, UTC, because that is what capture
//! stamps records with. Sub-millisecond digits are dropped (floored), never rounded: a record
//! stamped at ms `r` arrived at or before an exact instant `t` exactly when `r <= floor(t)`, so
//! flooring keeps "T inclusive" true, while rounding up would let in a record from after `t`.
//!
//! The clock is a parameter (`now_ms`) so the relative forms are testable; the local time zone is
//! `chrono::Local` for callers, and a type parameter inside so tests can use a zone with
//! daylight-saving jumps without touching the process-wide `TZ` variable.

use chrono::{DateTime, Local, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use std::time::Duration;

/// One line for every error, so a user who typed the wrong thing sees what would work.
const ACCEPTED_TIMES: &str = "accepted: RFC 3339 '2026-08-03T20:28:10+08:00' or '...Z', \
local wall time '2026-08-03 20:28:10[.123]', unix seconds '@1790000000[.123]', \
relative '-10m', '2h ago', '-1h30m', or 'now'";

const ACCEPTED_DURATIONS: &str =
    "accepted: a number and a unit, repeated: '500ms', '45s', '30m', '12h', '7d', '2w', '1h30m'";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("cannot read '{input}' as a time: {why}; {ACCEPTED_TIMES}")]
    Time { input: String, why: String },
    /// A wall-clock time the local zone skips (clocks jump forward).
    #[error(
        "'{input}' never happened in the local time zone (the clocks jumped over it); \
         give the instant in RFC 3339 with an offset, e.g. '{example}'"
    )]
    NonexistentLocal { input: String, example: String },
    /// A wall-clock time the local zone passes twice (clocks fall back).
    #[error(
        "'{input}' happened twice in the local time zone (at {earliest} and at {latest}); \
         give the instant in RFC 3339 with an offset to pick one"
    )]
    AmbiguousLocal {
        input: String,
        earliest: String,
        latest: String,
    },
    #[error("cannot read '{input}' as a duration: {why}; {ACCEPTED_DURATIONS}")]
    Duration { input: String, why: String },
}

fn time_err(input: &str, why: impl Into<String>) -> TimeError {
    TimeError::Time {
        input: input.to_string(),
        why: why.into(),
    }
}

fn duration_err(input: &str, why: impl Into<String>) -> TimeError {
    TimeError::Duration {
        input: input.to_string(),
        why: why.into(),
    }
}

/// Milliseconds since the Unix epoch for a time given on the command line. `now_ms` anchors the
/// relative forms (`-10m`, `2h ago`, `now`); wall times without an offset are read in the
/// machine's local time zone.
pub fn parse_time(s: &str, now_ms: u64) -> Result<u64, TimeError> {
    parse_time_in(s, now_ms, &Local)
}

/// Whether `s` names the present moment (`now`, `-0s`, `0m ago`…), which restore reads as
/// `--latest` (DESIGN.md): "now" taken literally is a few milliseconds past the last record the
/// agent has vouched for, so it would always be outside the restorable window.
pub fn means_latest(s: &str) -> bool {
    let t = s.trim();
    if t.eq_ignore_ascii_case("now") {
        return true;
    }
    relative_amount(t)
        .and_then(|ago| parse_duration_str(ago).ok())
        .is_some_and(|d| d.is_zero())
}

pub(crate) fn parse_time_in<Tz: TimeZone>(s: &str, now_ms: u64, tz: &Tz) -> Result<u64, TimeError>
where
    Tz::Offset: std::fmt::Display,
{
    let t = s.trim();
    if t.is_empty() {
        return Err(time_err(s, "it is empty"));
    }
    if t.eq_ignore_ascii_case("now") {
        return Ok(now_ms);
    }
    if let Some(rest) = t.strip_prefix('@') {
        return parse_unix_seconds(s, rest);
    }
    if let Some(ago) = relative_amount(t) {
        let d = parse_duration_str(ago).map_err(|why| time_err(s, why))?;
        let back = u64::try_from(d.as_millis()).map_err(|_| time_err(s, "that is too far back"))?;
        return now_ms.checked_sub(back).ok_or_else(|| {
            time_err(
                s,
                "that is before 1970-01-01, earlier than anything captured",
            )
        });
    }
    if t.starts_with('+') || t.to_ascii_lowercase().starts_with("in ") {
        return Err(time_err(s, "times in the future are not restorable"));
    }
    if t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(time_err(
            s,
            format!("a bare number is ambiguous: for unix seconds write '@{t}'"),
        ));
    }
    // An offset (or Z) makes it absolute; chrono also accepts a space for the 'T' here.
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return utc_ms(s, dt.timestamp_millis());
    }
    // What `format_ms` prints (`2026-11-23 17:40:01.123 +00:00`), so a time copied from
    // `flashback info` pastes straight into `--at`.
    for f in ["%Y-%m-%d %H:%M:%S%.f %:z", "%Y-%m-%dT%H:%M:%S%.f %:z"] {
        if let Ok(dt) = DateTime::parse_from_str(t, f) {
            return utc_ms(s, dt.timestamp_millis());
        }
    }
    let naive = parse_wall_time(t)
        .ok_or_else(|| time_err(s, "not a date and time in any accepted form"))?;
    match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(dt) => utc_ms(s, dt.timestamp_millis()),
        chrono::LocalResult::Ambiguous(a, b) => Err(TimeError::AmbiguousLocal {
            input: t.to_string(),
            earliest: a
                .fixed_offset()
                .to_rfc3339_opts(SecondsFormat::AutoSi, false),
            latest: b
                .fixed_offset()
                .to_rfc3339_opts(SecondsFormat::AutoSi, false),
        }),
        chrono::LocalResult::None => {
            // Suggest the same wall time at the offset in force before the jump (a day earlier
            // is safely before it), which is the offset the user's clock still showed.
            let offset = tz.offset_from_utc_datetime(&(naive - chrono::Duration::days(1)));
            Err(TimeError::NonexistentLocal {
                input: t.to_string(),
                example: format!("{}{}", naive.format("%Y-%m-%dT%H:%M:%S%.f"), offset),
            })
        }
    }
}

/// `2026-08-03 20:28:10`, with `T` instead of the space, with `.123`, or without seconds.
fn parse_wall_time(t: &str) -> Option<NaiveDateTime> {
    const FORMATS: [&str; 4] = [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ];
    FORMATS
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
}

/// The duration part of `-10m` or `10m ago`, if the input has either shape.
fn relative_amount(t: &str) -> Option<&str> {
    if let Some(rest) = t.strip_prefix('-') {
        return Some(rest.trim_start());
    }
    let lower_end = t.len().checked_sub(4)?;
    if t.is_char_boundary(lower_end) && t[lower_end..].eq_ignore_ascii_case(" ago") {
        return Some(t[..lower_end].trim_end());
    }
    None
}

fn utc_ms(input: &str, ms: i64) -> Result<u64, TimeError> {
    u64::try_from(ms).map_err(|_| {
        time_err(
            input,
            "that is before 1970-01-01, earlier than anything captured",
        )
    })
}

/// `@<seconds>[.<fraction>]` in integer arithmetic: `@1790000000.123` must be exactly
/// 1790000000123 ms, which an f64 detour does not promise.
fn parse_unix_seconds(input: &str, rest: &str) -> Result<u64, TimeError> {
    let (secs, frac) = match rest.split_once('.') {
        Some((s, f)) => (s, f),
        None => (rest, ""),
    };
    if secs.is_empty()
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(time_err(
            input,
            "after '@' put whole unix seconds, optionally with a decimal fraction",
        ));
    }
    let secs: u64 = secs
        .parse()
        .map_err(|_| time_err(input, "that number of seconds is too large"))?;
    // Floor to the millisecond: first three fraction digits, right-padded with zeros.
    let ms_part = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u64, |acc, b| acc * 10 + u64::from(b - b'0'));
    secs.checked_mul(1000)
        .and_then(|ms| ms.checked_add(ms_part))
        .filter(|ms| i64::try_from(*ms).is_ok())
        .ok_or_else(|| time_err(input, "that number of seconds is too large"))
}

/// A span such as `7d`, `12h`, `1h30m`, `500ms` or `2w` (for `--keep` and the relative times).
pub fn parse_duration(s: &str) -> Result<Duration, TimeError> {
    parse_duration_str(s).map_err(|why| duration_err(s, why))
}

/// The grammar shared by durations and relative times: one or more `<integer><unit>`, spaces
/// allowed between them. Units have long spellings too (`10 minutes ago`) because that is what
/// people type at 3 a.m.; fractions (`1.5h`) are refused rather than guessed at.
fn parse_duration_str(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("it is empty".to_string());
    }
    let mut rest = t;
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(if rest.starts_with('.') || rest.starts_with(',') {
                "fractions are not accepted; combine units instead, e.g. '1h30m'".to_string()
            } else {
                format!("expected a number at '{rest}'")
            });
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| "that number is too large".to_string())?;
        rest = rest[digits..].trim_start();
        if rest.starts_with('.') || rest.starts_with(',') {
            return Err(
                "fractions are not accepted; combine units instead, e.g. '1h30m'".to_string(),
            );
        }
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..letters];
        let ms_per = unit_ms(unit).ok_or_else(|| {
            if unit.is_empty() {
                format!("the number {n} has no unit")
            } else {
                format!("unknown unit '{unit}'")
            }
        })?;
        let ms = n
            .checked_mul(ms_per)
            .ok_or_else(|| "that is too long".to_string())?;
        total_ms = total_ms
            .checked_add(ms)
            .ok_or_else(|| "that is too long".to_string())?;
        rest = rest[letters..].trim_start();
    }
    Ok(Duration::from_millis(total_ms))
}

fn unit_ms(unit: &str) -> Option<u64> {
    Some(match unit.to_ascii_lowercase().as_str() {
        "ms" | "msec" | "msecs" | "millis" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        "w" | "week" | "weeks" => 7 * 86_400_000,
        _ => return None,
    })
}

/// Local time with its offset and milliseconds, e.g. `2026-11-23 17:40:01.123 +00:00`: what a
/// person compares with their own clock, and, pasted back as is, an exact `--at`.
pub fn format_ms(ms: u64) -> String {
    format_ms_in(ms, &Local)
}

pub(crate) fn format_ms_in<Tz: TimeZone>(ms: u64, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    match i64::try_from(ms)
        .ok()
        .and_then(|m| tz.timestamp_millis_opt(m).single())
    {
        Some(dt) => dt.format("%Y-%m-%d %H:%M:%S%.3f %:z").to_string(),
        None => format!("{ms} ms after the epoch (out of range)"),
    }
}

/// UTC in RFC 3339 with milliseconds and `Z`, e.g. `2026-11-23T17:40:01.123Z`: for `--json`
/// and logs, where a zone-independent form is wanted.
pub fn format_rfc3339_ms(ms: u64) -> String {
    match i64::try_from(ms)
        .ok()
        .and_then(|m| Utc.timestamp_millis_opt(m).single())
    {
        Some(dt) => dt.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => format!("{ms} ms after the epoch (out of range)"),
    }
}

/// A span in the largest sensible units, e.g. `2h 05m`, `41.3s`, `3d 04h`: for the text of
/// `flashback info` and error messages that print windows.
pub fn format_duration_ms(ms: u64) -> String {
    const S: u64 = 1_000;
    const M: u64 = 60 * S;
    const H: u64 = 60 * M;
    const D: u64 = 24 * H;
    if ms < S {
        format!("{ms}ms")
    } else if ms < M {
        format!("{}.{}s", ms / S, (ms % S) / 100)
    } else if ms < H {
        format!("{}m {:02}s", ms / M, (ms % M) / S)
    } else if ms < D {
        format!("{}h {:02}m", ms / H, (ms % H) / M)
    } else {
        format!("{}d {:02}h", ms / D, (ms % D) / H)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, LocalResult, NaiveDate, Offset};

    /// 2026-11-23 17:40:01 UTC, a fixed "now".
    const NOW: u64 = 1_795_455_601_000;

    #[test]
    fn rfc3339_with_offsets_and_fractions() {
        assert_eq!(
            parse_time("2026-08-03T20:28:10+08:00", NOW),
            Ok(1_785_760_090_000)
        );
        assert_eq!(
            parse_time("2026-08-03T12:28:10Z", NOW),
            Ok(1_785_760_090_000)
        );
        assert_eq!(
            parse_time("2026-08-03T12:28:10z", NOW),
            Ok(1_785_760_090_000)
        );
        assert_eq!(
            parse_time("2026-08-03T12:28:10.5Z", NOW),
            Ok(1_785_760_090_500)
        );
        assert_eq!(
            parse_time("2026-08-03T12:28:10.123Z", NOW),
            Ok(1_785_760_090_123)
        );
        // Sub-millisecond digits are floored, not rounded (see the module comment).
        assert_eq!(
            parse_time("2026-08-03T12:28:10.123999Z", NOW),
            Ok(1_785_760_090_123)
        );
        assert_eq!(
            parse_time("2026-08-03T07:58:10-04:30", NOW),
            Ok(1_785_760_090_000)
        );
        assert_eq!(
            parse_time("  2026-08-03 12:28:10Z  ", NOW),
            Ok(1_785_760_090_000)
        );
    }

    #[test]
    fn unix_seconds_are_exact() {
        assert_eq!(parse_time("@1790000000", NOW), Ok(1_790_000_000_000));
        assert_eq!(parse_time("@1790000000.123", NOW), Ok(1_790_000_000_123));
        assert_eq!(parse_time("@1790000000.1", NOW), Ok(1_790_000_000_100));
        assert_eq!(parse_time("@1790000000.", NOW), Ok(1_790_000_000_000));
        assert_eq!(parse_time("@1790000000.9999", NOW), Ok(1_790_000_000_999));
        // 0.3 and 0.7 are the classic values an f64 detour turns into ...299 / ...699.
        assert_eq!(parse_time("@1790000000.300", NOW), Ok(1_790_000_000_300));
        assert_eq!(parse_time("@1790000000.7", NOW), Ok(1_790_000_000_700));
        assert_eq!(parse_time("@0", NOW), Ok(0));
        for bad in [
            "@",
            "@-5",
            "@1e9",
            "@12x",
            "@.5",
            "@99999999999999999999",
            "@1.2.3",
        ] {
            assert!(
                matches!(parse_time(bad, NOW), Err(TimeError::Time { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn now_and_zero_ago_mean_latest() {
        for s in ["now", " NOW ", "-0s", "0m ago", "-0h0m"] {
            assert!(means_latest(s), "{s}");
        }
        for s in ["-1s", "-1ms", "@0", "2026-08-03 20:28:10", "nowhere", ""] {
            assert!(!means_latest(s), "{s}");
        }
    }

    #[test]
    fn relative_times_count_back_from_now() {
        let cases = [
            ("now", NOW),
            ("NOW", NOW),
            ("-10m", NOW - 600_000),
            ("10m ago", NOW - 600_000),
            ("2h ago", NOW - 7_200_000),
            ("-1d", NOW - 86_400_000),
            ("-30s", NOW - 30_000),
            ("-1h30m", NOW - 5_400_000),
            ("90s ago", NOW - 90_000),
            ("1h 30m ago", NOW - 5_400_000),
            ("10 minutes ago", NOW - 600_000),
            ("- 5s", NOW - 5_000),
            ("-250ms", NOW - 250),
            ("-1w", NOW - 604_800_000),
            ("-0s", NOW),
        ];
        for (input, want) in cases {
            assert_eq!(parse_time(input, NOW), Ok(want), "{input}");
        }
        assert!(matches!(
            parse_time("-100000d", 5_000),
            Err(TimeError::Time { .. })
        ));
    }

    #[test]
    fn bad_times_name_the_input_and_the_accepted_forms() {
        for bad in [
            "",
            "yesterday",
            "10m",
            "+10m",
            "in 5m",
            "1790000000",
            "2026-13-01 00:00:00",
            "-1.5h",
            "-10x",
            "ago",
            "2026-08-03",
            "-",
            "10m ago ago",
        ] {
            let err = parse_time(bad, NOW).expect_err(bad);
            let msg = err.to_string();
            assert!(msg.contains(&format!("'{}'", bad)), "{msg}");
            assert!(
                msg.contains("RFC 3339") && msg.contains("@1790000000") && msg.contains("2h ago"),
                "{msg}"
            );
            assert!(!msg.contains('\n'), "{msg}");
        }
        let msg = parse_time("1790000000", NOW).unwrap_err().to_string();
        assert!(msg.contains("'@1790000000'"), "{msg}");
        let msg = parse_time("-1.5h", NOW).unwrap_err().to_string();
        assert!(msg.contains("fractions"), "{msg}");
        assert!(parse_time("1970-01-01T00:00:00Z", NOW).is_ok());
        let msg = parse_time("1969-12-31T23:59:59Z", NOW)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("before 1970"), "{msg}");
    }

    #[test]
    fn local_wall_time_matches_chronos_own_conversion() {
        // Compared with chrono rather than a hard-coded zone, so the test holds in any TZ.
        let naive = NaiveDate::from_ymd_opt(2026, 8, 3)
            .unwrap()
            .and_hms_milli_opt(20, 28, 10, 123)
            .unwrap();
        let LocalResult::Single(expected) = Local.from_local_datetime(&naive) else {
            return; // This machine's zone has a DST jump at exactly that instant: nothing to compare.
        };
        let want = expected.timestamp_millis() as u64;
        assert_eq!(parse_time("2026-08-03 20:28:10.123", NOW), Ok(want));
        assert_eq!(parse_time("2026-08-03T20:28:10.123", NOW), Ok(want));
        assert_eq!(parse_time("2026-08-03 20:28:10", NOW), Ok(want - 123));
        assert_eq!(parse_time("2026-08-03 20:28", NOW), Ok(want - 10_123));
    }

    #[test]
    fn local_wall_time_in_a_fixed_zone() {
        let plus8 = FixedOffset::east_opt(8 * 3600).unwrap();
        assert_eq!(
            parse_time_in("2026-08-03 20:28:10", NOW, &plus8),
            Ok(1_785_760_090_000)
        );
        assert_eq!(
            parse_time_in("2026-08-03 20:28:10", NOW, &Utc),
            Ok(1_785_760_090_000 + 8 * 3_600_000)
        );
    }

    /// A zone at +01:00 that moves to +02:00 at 2026-03-29 01:00 UTC (local 02:00 → 03:00) and
    /// back at 2026-10-25 01:00 UTC (local 03:00 → 02:00), as central Europe does.
    #[derive(Clone, Copy, Debug)]
    struct DstZone;

    impl DstZone {
        fn summer_utc(utc: &NaiveDateTime) -> bool {
            let start = NaiveDate::from_ymd_opt(2026, 3, 29)
                .unwrap()
                .and_hms_opt(1, 0, 0)
                .unwrap();
            let end = NaiveDate::from_ymd_opt(2026, 10, 25)
                .unwrap()
                .and_hms_opt(1, 0, 0)
                .unwrap();
            *utc >= start && *utc < end
        }
    }

    impl TimeZone for DstZone {
        type Offset = FixedOffset;
        fn from_offset(_: &FixedOffset) -> Self {
            DstZone
        }
        fn offset_from_local_date(&self, local: &NaiveDate) -> LocalResult<FixedOffset> {
            self.offset_from_local_datetime(&local.and_hms_opt(12, 0, 0).unwrap())
        }
        fn offset_from_local_datetime(&self, local: &NaiveDateTime) -> LocalResult<FixedOffset> {
            let winter = FixedOffset::east_opt(3600).unwrap();
            let summer = FixedOffset::east_opt(7200).unwrap();
            let winter_fits = !Self::summer_utc(&(*local - chrono::Duration::hours(1)));
            let summer_fits = Self::summer_utc(&(*local - chrono::Duration::hours(2)));
            match (winter_fits, summer_fits) {
                (true, true) => LocalResult::Ambiguous(summer, winter),
                (true, false) => LocalResult::Single(winter),
                (false, true) => LocalResult::Single(summer),
                (false, false) => LocalResult::None,
            }
        }
        fn offset_from_utc_date(&self, utc: &NaiveDate) -> FixedOffset {
            self.offset_from_utc_datetime(&utc.and_hms_opt(12, 0, 0).unwrap())
        }
        fn offset_from_utc_datetime(&self, utc: &NaiveDateTime) -> FixedOffset {
            FixedOffset::east_opt(if Self::summer_utc(utc) { 7200 } else { 3600 })
                .unwrap()
                .fix()
        }
    }

    #[test]
    fn local_times_skipped_or_repeated_by_dst_are_refused_with_the_fix() {
        let z = DstZone;
        assert_eq!(
            parse_time_in("2026-03-29 01:59:59", NOW, &z),
            parse_time("2026-03-29T01:59:59+01:00", NOW)
        );
        assert_eq!(
            parse_time_in("2026-03-29 03:00:00", NOW, &z),
            parse_time("2026-03-29T03:00:00+02:00", NOW)
        );
        let gap = parse_time_in("2026-03-29 02:30:00", NOW, &z).unwrap_err();
        assert_eq!(
            gap,
            TimeError::NonexistentLocal {
                input: "2026-03-29 02:30:00".into(),
                example: "2026-03-29T02:30:00+01:00".into()
            }
        );
        assert!(gap.to_string().contains("RFC 3339 with an offset"), "{gap}");
        // The suggested fix parses.
        let TimeError::NonexistentLocal { example, .. } = &gap else {
            unreachable!()
        };
        assert!(parse_time(example, NOW).is_ok());

        let twice = parse_time_in("2026-10-25 02:30:00", NOW, &z).unwrap_err();
        assert_eq!(
            twice,
            TimeError::AmbiguousLocal {
                input: "2026-10-25 02:30:00".into(),
                earliest: "2026-10-25T02:30:00+02:00".into(),
                latest: "2026-10-25T02:30:00+01:00".into()
            }
        );
        assert!(
            twice.to_string().contains("RFC 3339 with an offset"),
            "{twice}"
        );
        assert_eq!(
            parse_time_in("2026-10-25 03:00:00", NOW, &z),
            parse_time("2026-10-25T03:00:00+01:00", NOW)
        );
    }

    #[test]
    fn durations() {
        let cases = [
            ("7d", 7 * 86_400_000),
            ("12h", 12 * 3_600_000),
            ("30m", 1_800_000),
            ("1h30m", 5_400_000),
            ("500ms", 500),
            ("45s", 45_000),
            ("2w", 14 * 86_400_000),
            ("1d12h", 36 * 3_600_000),
            ("0s", 0),
            (" 3 days ", 3 * 86_400_000),
            ("1m1ms", 60_001),
        ];
        for (input, ms) in cases {
            assert_eq!(
                parse_duration(input),
                Ok(Duration::from_millis(ms)),
                "{input}"
            );
        }
        for bad in [
            "",
            "7",
            "d",
            "1.5h",
            "10x",
            "-5m",
            "1h30",
            "99999999999999999999w",
            "3000000000000000w",
        ] {
            let msg = parse_duration(bad).expect_err(bad).to_string();
            assert!(
                msg.contains(&format!("'{bad}'")) && msg.contains("1h30m"),
                "{msg}"
            );
        }
    }

    #[test]
    fn formatting() {
        assert_eq!(
            format_rfc3339_ms(1_795_455_601_123),
            "2026-11-23T17:40:01.123Z"
        );
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_ms_in(1_795_455_601_123, &Utc),
            "2026-11-23 17:40:01.123 +00:00"
        );
        let plus8 = FixedOffset::east_opt(8 * 3600).unwrap();
        assert_eq!(
            format_ms_in(1_795_455_601_005, &plus8),
            "2026-11-24 01:40:01.005 +08:00"
        );
        assert!(format_ms(u64::MAX).contains("out of range"));
        assert!(format_rfc3339_ms(u64::MAX).contains("out of range"));
        // What format_ms prints parses back, as is, to the same instant.
        assert_eq!(
            parse_time(&format_ms(1_795_455_601_123), NOW),
            Ok(1_795_455_601_123)
        );
        let shown = format_ms_in(1_795_455_601_005, &plus8);
        assert_eq!(parse_time(&shown, NOW), Ok(1_795_455_601_005));
        assert_eq!(
            parse_time("2026-11-24 01:40:01 +08:00", NOW),
            Ok(1_795_455_601_000)
        );
        assert_eq!(
            parse_time(&format_rfc3339_ms(1_795_455_601_123), NOW),
            Ok(1_795_455_601_123)
        );
        assert_eq!(format_duration_ms(999), "999ms");
        assert_eq!(format_duration_ms(41_350), "41.3s");
        assert_eq!(format_duration_ms(125_000), "2m 05s");
        assert_eq!(format_duration_ms(7_500_000), "2h 05m");
        assert_eq!(format_duration_ms(3 * 86_400_000 + 4 * 3_600_000), "3d 04h");
    }
}
