//! `strftime_now`: Python's `datetime.now().strftime(fmt)`. This prints UTC (Hugging Face and
//! llama.cpp print local time): a server's prompt should not depend on the host's time zone,
//! and UTC needs no time-zone database. Templates use it for the date in the system prompt.

use std::fmt::Write as _;

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
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// (year, month 1..=12, day 1..=31) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    // Howard Hinnant's `civil_from_days`: shift to eras of 400 years starting in March.
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

/// Formats Unix time `t` (UTC) with the C / Python `strftime` directives templates use.
/// Unknown directives are copied through, as glibc does.
pub fn strftime_utc(fmt: &str, t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    // 1970-01-01 was a Thursday (index 3 from Monday).
    let wd = (days + 3).rem_euclid(7) as usize;
    let cum = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cum[mo as usize - 1] + d + u32::from(mo > 2 && is_leap(y));
    let h12 = if h % 12 == 0 { 12 } else { h % 12 };

    let mut out = String::with_capacity(fmt.len() * 2);
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(spec) = chars.next() else {
            out.push('%');
            break;
        };
        let _ = match spec {
            'Y' => write!(out, "{y}"),
            'y' => write!(out, "{:02}", y.rem_euclid(100)),
            'C' => write!(out, "{:02}", y.div_euclid(100)),
            'm' => write!(out, "{mo:02}"),
            'd' => write!(out, "{d:02}"),
            'e' => write!(out, "{d:2}"),
            'j' => write!(out, "{yday:03}"),
            'H' => write!(out, "{h:02}"),
            'I' => write!(out, "{h12:02}"),
            'M' => write!(out, "{mi:02}"),
            'S' => write!(out, "{s:02}"),
            'p' => write!(out, "{}", if h < 12 { "AM" } else { "PM" }),
            'B' => write!(out, "{}", MONTHS[mo as usize - 1]),
            'b' | 'h' => write!(out, "{}", &MONTHS[mo as usize - 1][..3]),
            'A' => write!(out, "{}", WEEKDAYS[wd]),
            'a' => write!(out, "{}", &WEEKDAYS[wd][..3]),
            'u' => write!(out, "{}", wd + 1),
            'w' => write!(out, "{}", (wd + 1) % 7),
            'F' => write!(out, "{y}-{mo:02}-{d:02}"),
            'D' => write!(out, "{mo:02}/{d:02}/{:02}", y.rem_euclid(100)),
            'T' => write!(out, "{h:02}:{mi:02}:{s:02}"),
            'R' => write!(out, "{h:02}:{mi:02}"),
            's' => write!(out, "{t}"),
            'Z' => write!(out, "UTC"),
            'z' => write!(out, "+0000"),
            'n' => writeln!(out),
            't' => write!(out, "\t"),
            '%' => write!(out, "%"),
            other => write!(out, "%{other}"),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_known_dates() {
        // 2024-07-26 00:00:00 UTC, a Friday (Llama 3.1's default date).
        let t = 1_721_952_000;
        assert_eq!(strftime_utc("%d %b %Y", t), "26 Jul 2024");
        assert_eq!(
            strftime_utc("%A %B %e %j %F %T %%", t),
            "Friday July 26 208 2024-07-26 00:00:00 %"
        );
        // 2000-02-29 13:05:09, leap day.
        let t = 951_829_509;
        assert_eq!(
            strftime_utc("%Y-%m-%d %H:%M:%S %I%p %a %j %y", t),
            "2000-02-29 13:05:09 01PM Tue 060 00"
        );
        assert_eq!(strftime_utc("%F", 0), "1970-01-01");
        assert_eq!(strftime_utc("%F %T", -1), "1969-12-31 23:59:59");
        assert_eq!(strftime_utc("%Q %", 0), "%Q %");
    }
}
