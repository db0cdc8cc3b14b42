//! Go-style durations, parsed in one place: the CRD's duration fields (`spec.tls.rotationPeriod`,
//! `spec.upgrade.blueGreen.minSyncDuration`: hours, minutes, seconds such as `720h` or `1h30m`)
//! and the executors' flags, which also take days (`7d`, `1d12h`).

use std::time::Duration;

/// Why a duration did not parse; the message quotes the text and names the units allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurationError(pub String);

impl std::fmt::Display for DurationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DurationError {}

/// Parses `90s`, `30m`, `1h30m` (whole numbers, units `h`, `m`, `s`).
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    parse_units(text, &[('h', 3600), ('m', 60), ('s', 1)], "use h, m or s")
}

/// Parses what [`parse`] does and days too: `7d`, `1d12h`.
pub fn parse_with_days(text: &str) -> Result<Duration, DurationError> {
    parse_units(
        text,
        &[('d', 86_400), ('h', 3600), ('m', 60), ('s', 1)],
        "use s, m, h or d",
    )
}

fn parse_units(text: &str, units: &[(char, u64)], allowed: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError("empty duration".into()));
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let Some(&(_, unit)) = units.iter().find(|(u, _)| *u == c) else {
            return Err(DurationError(format!("{text:?}: unknown unit {c:?} ({allowed})")));
        };
        let n: u64 = number
            .parse()
            .map_err(|_| DurationError(format!("{text:?}: a number must come before {c:?}")))?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| DurationError(format!("{text:?} is too long")))?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(DurationError(format!(
            "{text:?}: the last number has no unit ({allowed})"
        )));
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_in_hours_minutes_and_seconds() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("2m5s"), Ok(Duration::from_secs(125)));
        assert_eq!(parse("720h"), Ok(Duration::from_secs(720 * 3600)));
        for bad in ["", "10", "h", "5w", "1.5h", "30d", "99999999999999999999h"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn executor_durations_also_take_days() {
        assert_eq!(parse_with_days("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_with_days("1d12h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_with_days(" 90s "), Ok(Duration::from_secs(90)));
        for bad in ["", "10", "h", "5w", "1.5h"] {
            assert!(parse_with_days(bad).is_err(), "{bad}");
        }
    }
}
