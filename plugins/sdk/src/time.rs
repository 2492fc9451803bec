//! Time as adapters see it: the call's own start ([`crate::Call::now`]), in Unix
//! milliseconds, with the formats CRMs ask for.

/// A point in time, Unix milliseconds (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The time `ms` milliseconds after the Unix epoch.
    pub const fn from_unix_ms(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_ms(self) -> i64 {
        self.0
    }

    /// Whole seconds since the Unix epoch (rounded down).
    pub const fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// This machine's clock: for native code only (in a component, which has no such clock,
    /// it panics; a component reads its call's time, [`crate::Call::now`]).
    pub fn system_now() -> Self {
        let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        Timestamp(ms)
    }

    /// RFC 3339 in UTC with milliseconds: `2026-11-26T10:00:00.000Z`.
    pub fn rfc3339(self) -> String {
        let (y, m, d, hh, mm, ss) = self.civil();
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{:03}Z", self.0.rem_euclid(1000))
    }

    /// An HTTP date (RFC 9110 IMF-fixdate): `Thu, 26 Nov 2026 10:00:00 GMT`.
    pub fn http_date(self) -> String {
        const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
        const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
        let (y, m, d, hh, mm, ss) = self.civil();
        let weekday = DAYS[self.unix_seconds().div_euclid(86_400).rem_euclid(7) as usize];
        format!("{weekday}, {d:02} {} {y:04} {hh:02}:{mm:02}:{ss:02} GMT", MONTHS[(m - 1) as usize])
    }

    /// Reads an HTTP date (IMF-fixdate, as `Retry-After` carries one).
    pub fn parse_http_date(s: &str) -> Option<Self> {
        // "Thu, 26 Nov 2026 10:00:00 GMT"
        let parts: Vec<&str> = s.trim().split_whitespace().collect();
        let [_, day, month, year, time, "GMT"] = parts[..] else { return None };
        const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
        let m = MONTHS.iter().position(|x| *x == month)? as i64 + 1;
        let (d, y): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
        let hms: Vec<i64> = time.split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
        let [hh, mm, ss] = hms[..] else { return None };
        if !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
            return None;
        }
        // Howard Hinnant's days_from_civil.
        let yy = if m <= 2 { y - 1 } else { y };
        let era = yy.div_euclid(400);
        let yoe = yy - era * 400;
        let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
        let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
        Some(Timestamp((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000))
    }

    fn civil(self) -> (i64, i64, i64, i64, i64, i64) {
        let secs = self.unix_seconds();
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        (yoe + era * 400 + i64::from(m <= 2), m, d, rem / 3600, rem % 3600 / 60, rem % 60)
    }
}

/// The time as this code can know it: in a component, the call's (the host's answer to the
/// wall clock, pinned per call); natively, the system's.
pub(crate) fn clock_now() -> Timestamp {
    #[cfg(target_arch = "wasm32")]
    return Timestamp::from_unix_ms(crate::__private::now_ms());
    #[cfg(not(target_arch = "wasm32"))]
    Timestamp::system_now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_reads_back() {
        let t = Timestamp::from_unix_ms(1_767_000_060_123);
        assert_eq!(t.rfc3339(), "2025-12-29T09:21:00.123Z");
        assert_eq!(t.http_date(), "Mon, 29 Dec 2025 09:21:00 GMT");
        assert_eq!(Timestamp::parse_http_date("Mon, 29 Dec 2025 09:21:00 GMT"), Some(Timestamp::from_unix_ms(1_767_000_060_000)));
        assert_eq!(Timestamp::from_unix_ms(0).http_date(), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(Timestamp::parse_http_date("soon"), None);
    }
}
