//! Durations and sizes as people write them in profiles, flags and the
//! environment (`30s`, `512Mi`): the one parser of each, shared by config,
//! the CLI, the API and the handler specs. A leaf: it imports nothing of
//! drover.

use std::time::Duration;

/// Parses a profile duration: a whole number followed by a unit, one of `ms`, `s`,
/// `m`, `h` (e.g. `500ms`, `30s`, `5m`, `1h`; a space before the unit is allowed).
///
/// A bare number is rejected: whether `250` means milliseconds or seconds is exactly
/// the kind of guess that produces a timeout a thousand times off.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (number, unit) = split_number(s)?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    number.checked_mul(millis_per_unit).map(Duration::from_millis)
}

/// Parses a profile size in bytes: a whole number with an optional unit. `B` or no
/// unit means bytes; `kB`, `MB`, `GB`, `TB` are powers of 1000 and `KiB`, `MiB`,
/// `GiB`, `TiB` powers of 1024, as are Kubernetes' `Ki`, `Mi`, `Gi`, `Ti` (so a
/// container's `memory = "512Mi"` reads as it would in a pod spec). Units are
/// matched case-insensitively (`10KB` is 10 000 bytes, as the SI prefix says).
/// Kubernetes' bare `k`, `M`, `G` are not accepted: matched case-insensitively, `m`
/// would be ambiguous with Kubernetes' milli.
pub fn parse_size(s: &str) -> Option<u64> {
    let (number, unit) = split_number(s)?;
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" | "ki" => 1 << 10,
        "mib" | "mi" => 1 << 20,
        "gib" | "gi" => 1 << 30,
        "tib" | "ti" => 1 << 40,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

/// A rate as people write it: a whole number of events per period,
/// `100/s`, `5000/m`, `10/h`, or per any duration `parse_duration` takes
/// (`30/10s`). Queue rate limits use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u64,
    pub per: Duration,
}

impl Rate {
    /// Parses `<count>/<period>`; the period is a unit alone (`s`, `m`,
    /// `h`) or a duration. A count of 0 or a period under 1 ms is refused.
    pub fn parse(s: &str) -> Option<Rate> {
        let (count, per) = s.trim().split_once('/')?;
        let count = count.trim();
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let count: u64 = count.parse().ok().filter(|&n| n > 0)?;
        let per = per.trim();
        let per = match per {
            "s" | "m" | "h" => parse_duration(&format!("1{per}"))?,
            other => parse_duration(other)?,
        };
        (per >= Duration::from_millis(1)).then_some(Rate { count, per })
    }

    /// Events a second.
    pub fn per_second(self) -> f64 {
        self.count as f64 / self.per.as_secs_f64()
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.per.as_millis();
        match ms {
            1_000 => write!(f, "{}/s", self.count),
            60_000 => write!(f, "{}/m", self.count),
            3_600_000 => write!(f, "{}/h", self.count),
            _ if ms % 3_600_000 == 0 => write!(f, "{}/{}h", self.count, ms / 3_600_000),
            _ if ms % 60_000 == 0 => write!(f, "{}/{}m", self.count, ms / 60_000),
            _ if ms % 1_000 == 0 => write!(f, "{}/{}s", self.count, ms / 1_000),
            _ => write!(f, "{}/{}ms", self.count, ms),
        }
    }
}

/// Splits `"  64 KiB "` into `(64, "KiB")`. Only ASCII digits are accepted for the
/// number, so signs, fractions and exponents are all rejected.
fn split_number(s: &str) -> Option<(u64, &str)> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let number = s[..digits].parse().ok()?;
    Some((number, s[digits..].trim_start()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_by_unit_or_duration_and_print_back() {
        for (text, per_second, shown) in [
            ("100/s", 100.0, "100/s"),
            ("5000/m", 5000.0 / 60.0, "5000/m"),
            (" 10 / h ", 10.0 / 3600.0, "10/h"),
            ("30/10s", 3.0, "30/10s"),
            ("1/500ms", 2.0, "1/500ms"),
            ("6/2m", 0.05, "6/2m"),
        ] {
            let r = Rate::parse(text).unwrap_or_else(|| panic!("{text}"));
            assert!((r.per_second() - per_second).abs() < 1e-9, "{text}");
            assert_eq!(r.to_string(), shown);
            assert_eq!(Rate::parse(shown), Some(r));
        }
        for bad in [
            "", "100", "/s", "0/s", "-1/s", "1.5/s", "100/x", "100/0s", "100/s/s", "1e3/s", "100/",
        ] {
            assert_eq!(Rate::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parse_duration_table() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("500ms", Some(Duration::from_millis(500))),
            ("30s", Some(Duration::from_secs(30))),
            ("5m", Some(Duration::from_secs(300))),
            ("1h", Some(Duration::from_secs(3600))),
            ("0s", Some(Duration::ZERO)),
            (" 10 s ", Some(Duration::from_secs(10))),
            ("250", None),
            ("", None),
            ("s", None),
            ("-5s", None),
            ("1.5s", None),
            ("3 parsecs", None),
            ("5M", None),
            ("10d", None),
            ("99999999999999999999h", None),
            ("18446744073709551615h", None),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_duration(input), *expected, "parse_duration({input:?})");
        }
    }

    #[test]
    fn parse_size_table() {
        let cases: &[(&str, Option<u64>)] = &[
            ("512", Some(512)),
            ("512B", Some(512)),
            ("64KiB", Some(64 * 1024)),
            ("1MiB", Some(1 << 20)),
            ("1GiB", Some(1 << 30)),
            ("2TiB", Some(2 << 40)),
            ("10kB", Some(10_000)),
            ("10KB", Some(10_000)),
            ("3MB", Some(3_000_000)),
            ("1 mib", Some(1 << 20)),
            ("512Mi", Some(512 << 20)),
            ("64Ki", Some(64 << 10)),
            ("2Gi", Some(2 << 30)),
            ("1Ti", Some(1 << 40)),
            ("8 mi", Some(8 << 20)),
            ("0", Some(0)),
            ("", None),
            ("KiB", None),
            ("1.5MiB", None),
            ("-1", None),
            ("10 bytes", None),
            ("20000000TiB", None),
            ("20000000Ti", None),
            ("5M", None),
            ("5m", None),
            ("1k", None),
            ("1Mii", None),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_size(input), *expected, "parse_size({input:?})");
        }
    }
}
