//! Sizes (`128MiB`) and durations (`7d`) as people type them on a command line.

use std::time::Duration;

/// `1048576`, `512K`, `128MiB`, `1G`, `2GB`: binary multiples (K = KiB), as sizes of uploads are.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size such as 128MiB or 1048576"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit '{other}' in '{s}' (use K, M, G or T)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size '{s}' is too large"))
}

/// `30s`, `15m`, `12h`, `7d`, `1w`, or a combination such as `1d12h`; a bare number is seconds.
/// CPU cores (`1`, `0.5`, `1.5`) as millicores, at least 0.01 core.
pub fn parse_cores(s: &str) -> Result<u64, String> {
    let cores: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of cores such as 1 or 0.5"))?;
    if !cores.is_finite() || !(0.01..=1024.0).contains(&cores) {
        return Err(format!("{s:?}: cores must be between 0.01 and 1024"));
    }
    Ok((cores * 1000.0).round() as u64)
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration; use e.g. 7d, 12h, 30m".into());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => {
                return Err(format!(
                    "unknown duration unit '{c}' in '{s}' (use s, m, h, d or w)"
                ))
            }
        };
        let n: u64 = num
            .parse()
            .map_err(|_| format!("'{s}' is not a duration such as 7d or 12h"))?;
        num.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration '{s}' is too large"))?;
    }
    if !num.is_empty() {
        return Err(format!(
            "'{s}' ends in a number without a unit (use s, m, h, d or w)"
        ));
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("128MiB"), Ok(128 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999999999T").is_err());
    }

    #[test]
    fn cores() {
        assert_eq!(parse_cores("1"), Ok(1000));
        assert_eq!(parse_cores("0.5"), Ok(500));
        assert_eq!(parse_cores("1.25"), Ok(1250));
        for bad in ["", "0", "-1", "x", "NaN", "inf", "0.001", "2000"] {
            assert!(parse_cores(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(
            parse_duration("1d12h30m"),
            Ok(Duration::from_secs(86_400 + 12 * 3600 + 1800))
        );
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        for bad in ["", "d", "7x", "1d2", "h7", "-1h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
