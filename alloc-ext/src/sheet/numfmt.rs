//! Number formats: a renderer that turns a value plus an Excel number-format string (NFS) into
//! the text a user sees, and the paper's rule-based type recognizer for cells without an
//! informative NFS (§3.4: Year, Integer, Float, Percentage, Scientific, Date, Time, Currency,
//! Email, Others).
//!
//! The renderer covers the codes real workbooks use (`0`, `#,##0.00`, `0%`, `0.00E+00`,
//! literals, sections, colours, `[$€-407]` currency, dates and times, elapsed `[h]`); fractions
//! (`# ?/?`) fall back to General.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

/// The recognizer's data types (the paper's nine labels; "Others" is `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataType {
    /// A four-digit year 1900-2099.
    Year,
    /// An integer.
    Integer,
    /// A decimal number.
    Float,
    /// A percentage.
    Percentage,
    /// Scientific notation.
    Scientific,
    /// A date.
    Date,
    /// A time of day.
    Time,
    /// A currency amount.
    Currency,
    /// An e-mail address.
    Email,
}

impl DataType {
    /// The label the paper's prompts use.
    pub fn label(self) -> &'static str {
        match self {
            DataType::Year => "YearData",
            DataType::Integer => "IntNum",
            DataType::Float => "FloatNum",
            DataType::Percentage => "PercentageNum",
            DataType::Scientific => "ScientificNum",
            DataType::Date => "DateData",
            DataType::Time => "TimeData",
            DataType::Currency => "CurrencyData",
            DataType::Email => "EmailData",
        }
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn strip_sign(s: &str) -> &str {
    s.strip_prefix(['-', '+']).unwrap_or(s)
}

fn is_decimal(s: &str) -> bool {
    // (\d+(\.\d*)?|\.\d+)
    match s.split_once('.') {
        None => is_digits(s),
        Some((a, b)) => {
            (is_digits(a) && (b.is_empty() || is_digits(b))) || (a.is_empty() && is_digits(b))
        }
    }
}

fn date_prefix(s: &str) -> bool {
    // Prefix forms yyyy-m-d, d-m-yyyy, d-m, yyyy-m with '-' or '/'.
    let b = s.as_bytes();
    let run = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let first = run(0);
    if first == 0 || first > 4 || first == 3 {
        return false;
    }
    let Some(&sep) = b.get(first) else {
        return false;
    };
    if sep != b'-' && sep != b'/' {
        return false;
    }
    let second = run(first + 1);
    (1..=2).contains(&second) && (first == 4 || first <= 2)
}

fn is_time(s: &str) -> bool {
    let s = s
        .strip_suffix("AM")
        .or_else(|| s.strip_suffix("PM"))
        .or_else(|| s.strip_suffix("am"))
        .or_else(|| s.strip_suffix("pm"))
        .map(|t| t.strip_suffix(' ').unwrap_or(t))
        .unwrap_or(s);
    let Some((h, m)) = s.split_once(':') else {
        return false;
    };
    // H:MM, or H:MM:SS (the [code?] regex stops at minutes; a time with seconds is still the
    // paper's Time type, and xls files carry no NFS that would say so).
    let (m, sec) = match m.split_once(':') {
        Some((m, sec)) => (m, Some(sec)),
        None => (m, None),
    };
    let upto = |t: &str, max: u32| {
        is_digits(t) && t.len() <= 2 && t.parse::<u32>().is_ok_and(|v| v <= max)
    };
    upto(h, 23) && upto(m, 59) && sec.is_none_or(|sec| sec.len() == 2 && upto(sec, 59))
}

fn is_email(s: &str) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '.' || c == '-';
    let Some((user, host)) = s.split_once('@') else {
        return false;
    };
    let Some((dom, tld)) = host.rsplit_once('.') else {
        return false;
    };
    !user.is_empty()
        && user.chars().all(word)
        && !dom.is_empty()
        && dom.chars().all(word)
        && !tld.is_empty()
        && tld.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// Classifies a cell's display text; `None` is the paper's "Others" (text keeps its value).
pub fn recognize(text: &str) -> Option<DataType> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    if t.len() == 4 && (t.starts_with("19") || t.starts_with("20")) && is_digits(t) {
        return Some(DataType::Year);
    }
    let unsigned = strip_sign(t);
    let numeric_chars = !unsigned.is_empty()
        && unsigned
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b',' || b == b'.');
    let owned;
    let n: &str = if numeric_chars && t.contains(',') {
        owned = t.replace(',', "");
        &owned
    } else {
        t
    };
    let un = strip_sign(n);
    if is_digits(un) {
        return Some(DataType::Integer);
    }
    if let Some((a, b)) = un.split_once('.')
        && is_digits(a)
        && is_digits(b)
    {
        return Some(DataType::Float);
    }
    if let Some(p) = un.strip_suffix('%')
        && is_decimal(p)
    {
        return Some(DataType::Percentage);
    }
    if let Some(pos) = un.find(['e', 'E']) {
        let (m, e) = (&un[..pos], &un[pos + 1..]);
        if is_decimal(m) && is_digits(strip_sign(e)) {
            return Some(DataType::Scientific);
        }
    }
    if date_prefix(t) {
        return Some(DataType::Date);
    }
    if is_time(t) {
        return Some(DataType::Time);
    }
    for sym in ['$', '€', '£', '¥'] {
        if let Some(rest) = t.strip_prefix(sym) {
            let rest = rest.replace(',', "");
            let ok = match rest.split_once('.') {
                None => is_digits(&rest),
                Some((a, b)) => is_digits(a) && is_digits(b) && b.len() <= 2,
            };
            if ok {
                return Some(DataType::Currency);
            }
        }
    }
    if is_email(t) {
        return Some(DataType::Email);
    }
    None
}

/// Whether an NFS says nothing beyond "a value is here" (General or text `@`).
pub fn is_generic(nfs: &str) -> bool {
    let t = nfs.trim();
    t.is_empty() || t.eq_ignore_ascii_case("general") || t == "@"
}

/// Renders a number the way Excel's General format does (up to 11 significant characters).
pub fn general(v: f64) -> String {
    let mut s = String::new();
    if v.is_nan() {
        return String::from("#NUM!");
    }
    if v.is_infinite() {
        return String::from("#NUM!");
    }
    if v == 0.0 {
        return String::from("0");
    }
    let a = libm::fabs(v);
    if v == libm::trunc(v) && a < 1e11 {
        let _ = write!(s, "{}", v as i64);
        return s;
    }
    if !(1e-9..1e11).contains(&a) {
        let _ = write!(s, "{:.5E}", v);
        return tidy_exponent(&s);
    }
    // Ten significant digits, trailing zeros removed.
    let int_digits = if a >= 1.0 {
        libm::floor(libm::log10(a)) as i32 + 1
    } else {
        0
    };
    let decimals = (10 - int_digits).clamp(0, 10) as usize;
    let _ = write!(s, "{:.*}", decimals, v);
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    s
}

fn tidy_exponent(s: &str) -> String {
    // Rust writes 1.23450E5; Excel writes 1.2345E+05.
    let Some((m, e)) = s.split_once('E') else {
        return String::from(s);
    };
    let mut m = String::from(m);
    if m.contains('.') {
        while m.ends_with('0') {
            m.pop();
        }
        if m.ends_with('.') {
            m.pop();
        }
    }
    let (sign, digits) = match e.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', e),
    };
    let mut out = m;
    let _ = write!(out, "E{sign}{:0>2}", digits);
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(String),
    Digit(u8),
    Point,
    Comma,
    Percent,
    Exp(bool),
    Date(String),
    Elapsed(char),
    AmPm(bool),
    Slash,
}

fn split_sections(nfs: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut bracket, mut escape) = (false, false, false);
    let mut start = 0;
    for (i, ch) in nfs.char_indices() {
        if escape {
            escape = false;
            continue;
        }
        match ch {
            '\\' if !quoted => escape = true,
            '"' => quoted = !quoted,
            '[' if !quoted => bracket = true,
            ']' if !quoted => bracket = false,
            ';' if !quoted && !bracket => {
                out.push(&nfs[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&nfs[start..]);
    out
}

fn tokenize(section: &str) -> (Vec<Tok>, bool) {
    let chars: Vec<char> = section.chars().collect();
    let mut toks = Vec::new();
    let mut has_condition = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' => {
                let mut s = String::new();
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    s.push(chars[i]);
                    i += 1;
                }
                toks.push(Tok::Lit(s));
            }
            '\\' => {
                if let Some(&n) = chars.get(i + 1) {
                    toks.push(Tok::Lit(String::from(n)));
                    i += 1;
                }
            }
            '_' => {
                toks.push(Tok::Lit(String::from(" ")));
                i += 1;
            }
            '*' => i += 1,
            '[' => {
                let mut s = String::new();
                i += 1;
                while i < chars.len() && chars[i] != ']' {
                    s.push(chars[i]);
                    i += 1;
                }
                let lower = s.to_ascii_lowercase();
                if let Some(cur) = s.strip_prefix('$') {
                    let sym = cur.split('-').next().unwrap_or("");
                    toks.push(Tok::Lit(String::from(sym)));
                } else if !lower.is_empty() && lower.chars().all(|c| c == 'h') {
                    toks.push(Tok::Elapsed('h'));
                } else if !lower.is_empty() && lower.chars().all(|c| c == 'm') {
                    toks.push(Tok::Elapsed('m'));
                } else if !lower.is_empty() && lower.chars().all(|c| c == 's') {
                    toks.push(Tok::Elapsed('s'));
                } else if lower.starts_with(['<', '>', '=']) {
                    has_condition = true;
                }
            }
            '0' => toks.push(Tok::Digit(b'0')),
            '#' => toks.push(Tok::Digit(b'#')),
            '?' => toks.push(Tok::Digit(b'?')),
            '.' => toks.push(Tok::Point),
            ',' => toks.push(Tok::Comma),
            '%' => toks.push(Tok::Percent),
            '/' => toks.push(Tok::Slash),
            'E' | 'e'
                if matches!(chars.get(i + 1), Some('+') | Some('-'))
                    && toks.iter().any(|t| matches!(t, Tok::Digit(_))) =>
            {
                toks.push(Tok::Exp(chars[i + 1] == '+'));
                i += 1;
            }
            'A' | 'a'
                if chars[i..]
                    .iter()
                    .take(5)
                    .collect::<String>()
                    .eq_ignore_ascii_case("am/pm") =>
            {
                toks.push(Tok::AmPm(true));
                i += 4;
            }
            'A' | 'a'
                if chars[i..]
                    .iter()
                    .take(3)
                    .collect::<String>()
                    .eq_ignore_ascii_case("a/p") =>
            {
                toks.push(Tok::AmPm(false));
                i += 2;
            }
            'y' | 'Y' | 'm' | 'M' | 'd' | 'D' | 'h' | 'H' | 's' | 'S' => {
                let lc = c.to_ascii_lowercase();
                let mut s = String::new();
                while i < chars.len() && chars[i].to_ascii_lowercase() == lc {
                    s.push(lc);
                    i += 1;
                }
                toks.push(Tok::Date(s));
                continue;
            }
            'B' | 'b' if matches!(chars.get(i + 1), Some('1') | Some('2')) => i += 1,
            c => toks.push(Tok::Lit(String::from(c))),
        }
        i += 1;
    }
    (toks, has_condition)
}

/// Calendar fields of an Excel serial date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateParts {
    /// Year.
    pub year: i64,
    /// Month 1-12.
    pub month: u32,
    /// Day 1-31.
    pub day: u32,
    /// Hour 0-23.
    pub hour: u32,
    /// Minute.
    pub minute: u32,
    /// Second.
    pub second: u32,
    /// Day of week, 0 = Sunday.
    pub weekday: u32,
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    // Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Splits an Excel serial date. Serial 60 is the fictional 1900-02-29 of the 1900 system.
/// Returns `None` outside years 0..=9999 or for non-finite input.
pub fn date_parts(serial: f64, date1904: bool) -> Option<DateParts> {
    if !serial.is_finite() || !(0.0..3_000_000.0).contains(&serial) {
        return None;
    }
    let days = libm::floor(serial) as i64;
    let secs = libm::round((serial - days as f64) * 86_400.0) as i64;
    let (days, secs) = if secs >= 86_400 {
        (days + 1, secs - 86_400)
    } else {
        (days, secs)
    };
    // 1899-12-30 is day -25569 relative to 1970-01-01.
    let (year, month, day, unix_days) = if date1904 {
        let u = days - 24_107;
        let (y, m, d) = civil_from_days(u);
        (y, m, d, u)
    } else if days == 60 {
        (1900, 2, 29, -25_509)
    } else if days < 60 {
        let u = days - 25_568;
        let (y, m, d) = civil_from_days(u);
        (y, m, d, u)
    } else {
        let u = days - 25_569;
        let (y, m, d) = civil_from_days(u);
        (y, m, d, u)
    };
    if year > 9999 {
        return None;
    }
    Some(DateParts {
        year,
        month,
        day,
        hour: (secs / 3600) as u32,
        minute: (secs / 60 % 60) as u32,
        second: (secs % 60) as u32,
        weekday: (unix_days + 4).rem_euclid(7) as u32,
    })
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

fn render_date(toks: &[Tok], v: f64, date1904: bool) -> Option<String> {
    let p = date_parts(v, date1904)?;
    let has_ampm = toks.iter().any(|t| matches!(t, Tok::AmPm(_)));
    let mut out = String::new();
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Lit(s) => out.push_str(s),
            Tok::Point => out.push('.'),
            Tok::Comma => out.push(','),
            Tok::Slash => out.push('/'),
            Tok::Percent => out.push('%'),
            Tok::Digit(_) | Tok::Exp(_) => {}
            Tok::AmPm(full) => {
                let pm = p.hour >= 12;
                out.push_str(match (full, pm) {
                    (true, false) => "AM",
                    (true, true) => "PM",
                    (false, false) => "A",
                    (false, true) => "P",
                });
            }
            Tok::Elapsed(u) => {
                let total = libm::floor(v * 86_400.0 + 0.5) as i64;
                let n = match u {
                    'h' => total / 3600,
                    'm' => total / 60,
                    _ => total,
                };
                let _ = write!(out, "{n}");
            }
            Tok::Date(s) => {
                let n = s.len();
                match s.as_bytes()[0] {
                    b'y' => {
                        if n <= 2 {
                            let _ = write!(out, "{:02}", p.year.rem_euclid(100));
                        } else {
                            let _ = write!(out, "{:04}", p.year);
                        }
                    }
                    b'd' => match n {
                        1 => {
                            let _ = write!(out, "{}", p.day);
                        }
                        2 => {
                            let _ = write!(out, "{:02}", p.day);
                        }
                        3 => out.push_str(&DAYS[p.weekday as usize][..3]),
                        _ => out.push_str(DAYS[p.weekday as usize]),
                    },
                    b'h' => {
                        let h = if has_ampm {
                            (p.hour + 11) % 12 + 1
                        } else {
                            p.hour
                        };
                        if n >= 2 {
                            let _ = write!(out, "{h:02}");
                        } else {
                            let _ = write!(out, "{h}");
                        }
                    }
                    b's' => {
                        if n >= 2 {
                            let _ = write!(out, "{:02}", p.second);
                        } else {
                            let _ = write!(out, "{}", p.second);
                        }
                    }
                    _ => {
                        // 'm' is minutes right after an hour or right before seconds.
                        let prev_is_hour = toks[..i].iter().rev().find_map(|t| match t {
                            Tok::Date(s) => Some(s.starts_with('h')),
                            Tok::Elapsed(u) => Some(*u == 'h'),
                            _ => None,
                        });
                        let next_is_sec = toks[i + 1..].iter().find_map(|t| match t {
                            Tok::Date(s) => Some(s.starts_with('s')),
                            Tok::Elapsed(u) => Some(*u == 's'),
                            _ => None,
                        });
                        let minute =
                            n <= 2 && (prev_is_hour == Some(true) || next_is_sec == Some(true));
                        if minute {
                            if n == 2 {
                                let _ = write!(out, "{:02}", p.minute);
                            } else {
                                let _ = write!(out, "{}", p.minute);
                            }
                        } else {
                            match n {
                                1 => {
                                    let _ = write!(out, "{}", p.month);
                                }
                                2 => {
                                    let _ = write!(out, "{:02}", p.month);
                                }
                                3 => out.push_str(&MONTHS[p.month as usize - 1][..3]),
                                5 => out.push_str(&MONTHS[p.month as usize - 1][..1]),
                                _ => out.push_str(MONTHS[p.month as usize - 1]),
                            }
                        }
                    }
                }
            }
        }
    }
    Some(out)
}

fn group_thousands(int: &str) -> String {
    let mut out = String::new();
    let n = int.len();
    for (i, ch) in int.chars().enumerate() {
        if i > 0 && (n - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn render_number(toks: &[Tok], v: f64) -> Option<String> {
    if toks.iter().any(|t| matches!(t, Tok::Slash)) {
        return None;
    }
    let first_digit = toks.iter().position(|t| matches!(t, Tok::Digit(_)));
    let Some(first_digit) = first_digit else {
        // No placeholder: the section is pure text (e.g. "-" for zero).
        let mut out = String::new();
        for t in toks {
            if let Tok::Lit(s) = t {
                out.push_str(s);
            } else if let Tok::Percent = t {
                out.push('%');
            }
        }
        return Some(out);
    };
    let last_num = toks
        .iter()
        .rposition(|t| matches!(t, Tok::Digit(_) | Tok::Exp(_)))
        .unwrap_or(first_digit);
    let num = &toks[first_digit..=last_num];
    let percents = toks.iter().filter(|t| matches!(t, Tok::Percent)).count();
    let point = num.iter().position(|t| matches!(t, Tok::Point));
    let exp = num.iter().position(|t| matches!(t, Tok::Exp(_)));
    let int_end = point.or(exp).unwrap_or(num.len());
    let int_part = &num[..int_end];
    let min_int = int_part
        .iter()
        .filter(|t| matches!(t, Tok::Digit(b'0')))
        .count();
    let thousands = int_part
        .windows(2)
        .any(|w| matches!(w, [Tok::Comma, Tok::Digit(_)]));
    let decimals = match point {
        Some(p) => num[p + 1..exp.unwrap_or(num.len())]
            .iter()
            .filter(|t| matches!(t, Tok::Digit(_)))
            .count(),
        None => 0,
    };
    // Commas right after the last placeholder divide by 1000 each.
    let scale_commas = toks[last_num + 1..]
        .iter()
        .take_while(|t| matches!(t, Tok::Comma))
        .count();
    let mut x = libm::fabs(v);
    for _ in 0..percents {
        x *= 100.0;
    }
    for _ in 0..scale_commas {
        x /= 1000.0;
    }
    let mut body = String::new();
    if let Some(e) = exp {
        let exp_digits = num[e + 1..]
            .iter()
            .filter(|t| matches!(t, Tok::Digit(_)))
            .count()
            .max(1);
        let plus = matches!(num[e], Tok::Exp(true));
        let mut power = if x == 0.0 {
            0
        } else {
            libm::floor(libm::log10(x)) as i32
        };
        let mut mant = x / libm::pow(10.0, f64::from(power));
        let mut m = String::new();
        let _ = write!(m, "{:.*}", decimals, mant);
        if m.starts_with("10") {
            power += 1;
            mant /= 10.0;
            m.clear();
            let _ = write!(m, "{:.*}", decimals, mant);
        }
        body.push_str(&m);
        body.push('E');
        if power < 0 {
            body.push('-');
        } else if plus {
            body.push('+');
        }
        let _ = write!(body, "{:0>w$}", power.unsigned_abs(), w = exp_digits);
    } else {
        if x.is_nan() || x >= 1e300 {
            return None;
        }
        let mut s = String::new();
        let _ = write!(s, "{:.*}", decimals, x);
        let (int, frac) = match s.split_once('.') {
            Some((a, b)) => (String::from(a), String::from(b)),
            None => (s.clone(), String::new()),
        };
        let int = if int == "0" && min_int == 0 {
            String::new()
        } else if int.len() < min_int {
            let mut p = String::new();
            for _ in int.len()..min_int {
                p.push('0');
            }
            p.push_str(&int);
            p
        } else {
            int
        };
        body.push_str(&if thousands {
            group_thousands(&int)
        } else {
            int
        });
        if decimals > 0 {
            body.push('.');
            body.push_str(&frac);
        } else if point.is_some() {
            body.push('.');
        }
    }
    let mut out = String::new();
    for t in &toks[..first_digit] {
        push_literal(&mut out, t);
    }
    out.push_str(&body);
    for t in &toks[last_num + 1..] {
        push_literal(&mut out, t);
    }
    Some(out)
}

fn push_literal(out: &mut String, t: &Tok) {
    match t {
        Tok::Lit(s) => out.push_str(s),
        Tok::Percent => out.push('%'),
        Tok::Point => out.push('.'),
        _ => {}
    }
}

/// Renders a numeric value (a number or a date serial) through an NFS, as Excel displays it.
/// Unknown or unsupported codes fall back to [`general`].
pub fn render(v: f64, nfs: &str, date1904: bool) -> String {
    if is_generic(nfs) || !v.is_finite() {
        return general(v);
    }
    let sections = split_sections(nfs);
    let (idx, negate_shown) = match (sections.len(), v) {
        (1, _) => (0, false),
        (_, x) if x > 0.0 => (0, false),
        (_, x) if x < 0.0 => (1, true),
        (2, _) => (0, false),
        _ => (2, false),
    };
    let section = sections.get(idx).copied().unwrap_or(sections[0]);
    let (toks, conditional) = tokenize(section);
    if conditional {
        return general(v);
    }
    if is_generic(section) {
        return general(v);
    }
    let is_date = toks
        .iter()
        .any(|t| matches!(t, Tok::Date(_) | Tok::Elapsed(_) | Tok::AmPm(_)));
    let rendered = if is_date {
        render_date(&toks, v, date1904)
    } else {
        render_number(&toks, v).map(|s| {
            // A single section shows the sign itself; a negative section supplies its own.
            if v < 0.0 && !negate_shown && s.bytes().any(|b| b.is_ascii_digit() && b != b'0') {
                let mut n = String::from("-");
                n.push_str(&s);
                n
            } else {
                s
            }
        })
    };
    rendered.unwrap_or_else(|| general(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_common_codes() {
        let cases: &[(f64, &str, &str)] = &[
            (1172295.0, "#,##0", "1,172,295"),
            (0.0913, "0.00%", "9.13%"),
            (1.23456, "0.00", "1.23"),
            (-1234.5, "#,##0.00;(#,##0.00)", "(1,234.50)"),
            (-1234.5, "#,##0.00;[Red]\\-#,##0.00", "-1,234.50"),
            (-5.0, "0", "-5"),
            (12345.678, "0.00E+00", "1.23E+04"),
            (0.5, "0%", "50%"),
            (1500.0, "\"$\"#,##0", "$1,500"),
            (1500.0, "[$€-407] #,##0.00", "€ 1,500.00"),
            (
                0.0,
                "_(\"$\"* #,##0_);_(\"$\"* \\(#,##0\\);_(\"$\"* \"-\"_);_(@_)",
                " $- ",
            ),
            (43697.0, "d-mmm", "20-Aug"),
            (45336.0, "yyyy-mm-dd", "2024-02-14"),
            (45336.75, "m/d/yyyy h:mm", "2/14/2024 18:00"),
            (45336.75, "h:mm AM/PM", "6:00 PM"),
            (1.5, "[h]:mm:ss", "36:00:00"),
            (60.0, "yyyy-mm-dd", "1900-02-29"),
            (61.0, "yyyy-mm-dd", "1900-03-01"),
            (1.0, "yyyy-mm-dd", "1900-01-01"),
            (45336.0, "dddd, mmmm d", "Wednesday, February 14"),
            (0.75, "0.0", "0.8"),
            (0.25, "#.00", ".25"),
        ];
        for &(v, nfs, want) in cases {
            assert_eq!(render(v, nfs, false), want, "{v} {nfs}");
        }
        assert_eq!(render(0.0, "yyyy-mm-dd", true), "1904-01-01");
        assert_eq!(render(1.0, "# ?/?", false), "1");
        assert_eq!(render(f64::NAN, "0.00", false), "#NUM!");
    }

    #[test]
    fn general_format() {
        assert_eq!(general(42.0), "42");
        assert_eq!(general(0.1 + 0.2), "0.3");
        assert_eq!(general(1.0 / 3.0), "0.3333333333");
        assert_eq!(general(1e20), "1E+20");
        assert_eq!(general(-2.5), "-2.5");
    }

    #[test]
    fn recognizer_follows_the_paper_order() {
        use DataType::*;
        let cases: &[(&str, Option<DataType>)] = &[
            ("2024", Some(Year)),
            ("1,172,295", Some(Integer)),
            ("-12", Some(Integer)),
            ("3.14", Some(Float)),
            ("9.13%", Some(Percentage)),
            ("1.2E+05", Some(Scientific)),
            ("2024-02-14", Some(Date)),
            ("20/08", Some(Date)),
            ("18:30", Some(Time)),
            ("17:47:13", Some(Time)),
            ("06:34:00", Some(Time)),
            ("6:34:0", None),
            ("6:34:60", None),
            ("1:2:3:4", None),
            ("6:05 PM", Some(Time)),
            ("$12.50", Some(Currency)),
            ("a.b@example.org", Some(Email)),
            ("Profit", None),
            ("20-Aug", None),
            ("", None),
        ];
        for &(t, want) in cases {
            assert_eq!(recognize(t), want, "{t}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_codes_values_and_texts_never_panic(nfs in "\\PC{0,24}", code in "[0#?.,%E+\\-;\\[\\]\"hmsdyAP/ ]{0,16}", v in proptest::num::f64::ANY, text in "\\PC{0,16}") {
            let _ = render(v, &nfs, false);
            let _ = render(v, &code, true);
            let _ = recognize(&text);
            let _ = crate::sheet::CellRange::parse(&text);
        }
    }

    #[test]
    fn renderer_never_panics_on_odd_codes() {
        for nfs in [
            "", ";;;", "[", "\"", "\\", "0E+", "[>100]0", "0,,", "mmmmm", "[$-409]",
        ] {
            for v in [0.0, -1.0, 1e308, -1e-308, 2958465.9999] {
                let _ = render(v, nfs, false);
            }
        }
    }
}
