//! Time series in CSV files, for `goldcrest forecast`.
//!
//! Input: a header row, then one row per time step. The first column is a timestamp column when
//! its cells are not numbers (ISO dates `2024-01-31`, date-times `2024-01-31 12:00[:00]` or with
//! `T`) or when its header is `timestamp`, `time`, `date`, `datetime` or `ds` (integers are then
//! epoch seconds). Every other column is a variate. Empty cells and `NA`, `NaN`, `null` are
//! missing values; magnitudes of 1e30 or more are refused. Forecast timestamps continue at the median interval of the input, in the
//! input's format.

use anyhow::{Result, bail, ensure};

/// How a timestamp column is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeFormat {
    /// `YYYY-MM-DD`.
    Date,
    /// `YYYY-MM-DD HH:MM:SS` (`sep` is ' ' or 'T'; `seconds` whether seconds were written).
    DateTime {
        /// Separator between date and time.
        sep: char,
        /// Whether the input wrote seconds.
        seconds: bool,
    },
    /// Integer seconds (e.g. Unix time).
    Seconds,
}

/// A parsed CSV series.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvSeries {
    /// Variate names (the value columns' headers).
    pub names: Vec<String>,
    /// `names.len() × steps` values, variate-major; NaN for missing.
    pub values: Vec<f64>,
    /// Number of time steps.
    pub steps: usize,
    /// Timestamps in seconds and their format, when the first column holds them.
    pub time: Option<(Vec<i64>, TimeFormat)>,
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    // Howard Hinnant's algorithm: days since 1970-01-01 in the proleptic Gregorian calendar.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// Parses an ISO date or date-time into seconds since 1970 and its format.
pub fn parse_timestamp(s: &str) -> Option<(i64, TimeFormat)> {
    let s = s.trim();
    let (date, time, sep) = match s.find([' ', 'T']) {
        Some(i) => (&s[..i], Some(&s[i + 1..]), s[i..].chars().next()?),
        None => (s, None, ' '),
    };
    let mut parts = date.split('-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) || date.len() < 8
    {
        return None;
    }
    let days = days_from_civil(y, m, d);
    let Some(time) = time else {
        return Some((days * 86_400, TimeFormat::Date));
    };
    let time = time.trim_end_matches('Z');
    let mut hms = time.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let mi: i64 = hms.next()?.parse().ok()?;
    let sec = hms.next();
    let sc: i64 = match sec {
        Some(x) => x.parse::<f64>().ok()? as i64,
        None => 0,
    };
    if hms.next().is_some() || h > 23 || mi > 59 || sc > 60 {
        return None;
    }
    Some((
        days * 86_400 + h * 3600 + mi * 60 + sc,
        TimeFormat::DateTime {
            sep,
            seconds: sec.is_some(),
        },
    ))
}

/// Writes seconds since 1970 in `format`.
pub fn format_timestamp(t: i64, format: TimeFormat) -> String {
    if format == TimeFormat::Seconds {
        return t.to_string();
    }
    let (y, m, d) = civil_from_days(t.div_euclid(86_400));
    let rem = t.rem_euclid(86_400);
    match format {
        TimeFormat::Date => format!("{y:04}-{m:02}-{d:02}"),
        TimeFormat::DateTime { sep, seconds } => {
            let (h, mi, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
            if seconds {
                format!("{y:04}-{m:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}")
            } else {
                format!("{y:04}-{m:02}-{d:02}{sep}{h:02}:{mi:02}")
            }
        }
        TimeFormat::Seconds => unreachable!("handled above"),
    }
}

fn is_missing(cell: &str) -> bool {
    matches!(
        cell.to_ascii_lowercase().as_str(),
        "" | "na" | "nan" | "null" | "none" | "n/a"
    )
}

fn split_row(line: &str) -> Vec<String> {
    // Plain CSV with optional double quotes around cells (no embedded newlines).
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cell.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => cells.push(std::mem::take(&mut cell)),
            c => cell.push(c),
        }
    }
    cells.push(cell);
    cells.into_iter().map(|c| c.trim().to_string()).collect()
}

/// Parses CSV text into a series (see the module docs for the accepted layout).
pub fn parse(text: &str) -> Result<CsvSeries> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        bail!("the CSV file is empty (expected a header row and at least one data row)");
    };
    let header = split_row(header.trim_start_matches('\u{feff}'));
    let rows: Vec<(usize, Vec<String>)> = lines.map(|(i, l)| (i + 1, split_row(l))).collect();
    ensure!(
        !rows.is_empty(),
        "the CSV file has a header but no data rows"
    );
    for (line, row) in &rows {
        ensure!(
            row.len() == header.len(),
            "line {line}: {} cells, but the header has {}",
            row.len(),
            header.len()
        );
    }
    let first_name = header[0].to_ascii_lowercase();
    let named_time = matches!(
        first_name.as_str(),
        "timestamp" | "time" | "date" | "datetime" | "ds"
    );
    let first_numeric = rows
        .iter()
        .all(|(_, r)| is_missing(&r[0]) || r[0].parse::<f64>().is_ok());
    // A first column that is neither all numbers nor all timestamps is a value column with a
    // bad cell, reported as such below.
    let first_stamps = rows.iter().all(|(_, r)| parse_timestamp(&r[0]).is_some());
    let has_time = named_time || (!first_numeric && first_stamps);
    let mut time = None;
    if has_time {
        let mut stamps = Vec::with_capacity(rows.len());
        let mut format = None;
        for (line, row) in &rows {
            let cell = &row[0];
            let (t, f) = if let Ok(secs) = cell.parse::<i64>() {
                (secs, TimeFormat::Seconds)
            } else {
                parse_timestamp(cell).ok_or_else(|| {
                    anyhow::anyhow!(
                        "line {line}: timestamp {cell:?} is not an ISO date (2024-01-31), date-time (2024-01-31 12:00:00) or integer seconds"
                    )
                })?
            };
            format.get_or_insert(f);
            stamps.push(t);
        }
        let format = format.unwrap_or(TimeFormat::Seconds);
        time = Some((stamps, format));
    }
    let value_cols: Vec<usize> = (usize::from(has_time)..header.len()).collect();
    ensure!(
        !value_cols.is_empty(),
        "the CSV file has no value columns (only a timestamp column)"
    );
    let steps = rows.len();
    let mut values = vec![f64::NAN; value_cols.len() * steps];
    for (v, &col) in value_cols.iter().enumerate() {
        for (t, (line, row)) in rows.iter().enumerate() {
            let cell = &row[col];
            if is_missing(cell) {
                continue;
            }
            let x: f64 = cell.parse().map_err(|_| {
                anyhow::anyhow!(
                    "line {line}, column {:?}: {cell:?} is not a number (leave the cell empty for a missing value)",
                    header[col]
                )
            })?;
            ensure!(
                x.is_finite(),
                "line {line}, column {:?}: {cell:?} is not finite (leave the cell empty for a missing value)",
                header[col]
            );
            ensure!(
                x.abs() < goldcrest_core::models::toto::MAX_INPUT_MAGNITUDE,
                "line {line}, column {:?}: {cell:?} is too large (values must stay below 1e30 in magnitude)",
                header[col]
            );
            values[v * steps + t] = x;
        }
    }
    Ok(CsvSeries {
        names: value_cols.iter().map(|&c| header[c].clone()).collect(),
        values,
        steps,
        time,
    })
}

/// The next `horizon` timestamps after the input's last, at its median interval.
pub fn future_timestamps(stamps: &[i64], horizon: usize) -> Result<Vec<i64>> {
    ensure!(
        stamps.len() >= 2,
        "timestamps need at least two rows to continue (one row has no interval)"
    );
    let mut gaps: Vec<i64> = stamps.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_unstable();
    let step = gaps[gaps.len() / 2];
    ensure!(
        step > 0,
        "the median interval between timestamps is not positive"
    );
    let last = stamps[stamps.len() - 1];
    Ok((1..=horizon as i64).map(|i| last + i * step).collect())
}

/// Column label of a quantile: `q10`, `q90`, `q2.5`.
pub fn quantile_label(q: f64) -> String {
    let pct = (q * 100.0 * 1e6).round() / 1e6;
    format!("q{pct}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        for s in ["2024-02-29", "1999-12-31 23:59:59", "2024-01-31T12:00"] {
            let (t, f) = parse_timestamp(s).unwrap();
            assert_eq!(format_timestamp(t, f), s);
        }
        assert_eq!(parse_timestamp("2024-01-01").unwrap().0, 1_704_067_200);
        assert!(parse_timestamp("2024-13-01").is_none());
        assert!(parse_timestamp("hello").is_none());
    }

    #[test]
    fn parses_layouts_and_missing_values() {
        let s = parse("date,a,b\n2024-01-01,1,\n2024-01-02,NA,4\n2024-01-03,3,5\n").unwrap();
        assert_eq!(s.names, ["a", "b"]);
        assert_eq!(s.steps, 3);
        assert!(s.values[1].is_nan() && s.values[3].is_nan());
        assert_eq!(s.values[5], 5.0);
        let future = future_timestamps(&s.time.as_ref().unwrap().0, 2).unwrap();
        assert_eq!(format_timestamp(future[1], TimeFormat::Date), "2024-01-05");
        let plain = parse("x\n1\n2\n").unwrap();
        assert!(plain.time.is_none());
        assert_eq!(plain.values, [1.0, 2.0]);
    }

    #[test]
    fn clear_errors() {
        assert!(parse("").unwrap_err().to_string().contains("empty"));
        assert!(parse("a\n").unwrap_err().to_string().contains("no data"));
        let e = parse("a,b\n1,x\n").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("not a number"), "{e}");
        let e = parse("a,b\n1\n").unwrap_err().to_string();
        assert!(e.contains("2 cells") || e.contains("1 cells"), "{e}");
        assert!(parse("date\n2024-01-01\n").is_err());
        assert_eq!(quantile_label(0.1), "q10");
        assert_eq!(quantile_label(0.025), "q2.5");
    }
}
