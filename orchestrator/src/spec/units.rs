//! Sizes (`1G`) and durations (`30s`) as written in specs.

use std::time::Duration;

/// A size or duration that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Not a number followed by a known unit.
    #[error("{0:?} is not a size; write a number with K, M, G or T (binary units), e.g. \"1G\"")]
    Size(String),
    /// Zero, or too large.
    #[error("{0:?} is out of range; disks must be between 512 bytes and 1 PiB")]
    SizeRange(String),
    /// Plain byte counts must be whole sectors.
    #[error("{0:?} is not a multiple of 512 bytes")]
    SizeAlignment(String),
    /// Not a number followed by ms, s, m or h.
    #[error("{0:?} is not a duration; write a number with ms, s, m or h, e.g. \"30s\"")]
    Duration(String),
}

/// Largest disk accepted (1 PiB): beyond that the number is surely a typo.
const MAX_SIZE: u64 = 1 << 50;

/// Parses `512M`, `1G`, `1GiB`, `2T` (binary multiples) or a plain byte count.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let number: u64 = digits.parse().map_err(|_| UnitError::Size(text.into()))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(UnitError::Size(text.into())),
    };
    let bytes = number
        .checked_mul(1 << shift)
        .filter(|b| (512..=MAX_SIZE).contains(b))
        .ok_or_else(|| UnitError::SizeRange(text.into()))?;
    if bytes % 512 != 0 {
        return Err(UnitError::SizeAlignment(text.into()));
    }
    Ok(bytes)
}

/// Parses `250ms`, `30s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| UnitError::Duration(text.into()))?;
    let bad = || UnitError::Duration(text.into());
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs).ok_or_else(bad),
        "h" => n.checked_mul(3600).map(Duration::from_secs).ok_or_else(bad),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(matches!(parse_size("1X"), Err(UnitError::Size(_))));
        assert!(matches!(parse_size("G"), Err(UnitError::Size(_))));
        assert!(matches!(parse_size("-1G"), Err(UnitError::Size(_))));
        assert!(matches!(parse_size("0"), Err(UnitError::SizeRange(_))));
        assert!(matches!(
            parse_size("99999999T"),
            Err(UnitError::SizeRange(_))
        ));
        assert!(matches!(
            parse_size("1000"),
            Err(UnitError::SizeAlignment(_))
        ));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1.5s").is_err());
    }
}
