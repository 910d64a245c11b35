//! XEP-0203 delayed delivery stamps and XEP-0082 date-times, without a date library.

use crate::ns;
use starling_xml::Element;
use std::time::{SystemTime, UNIX_EPOCH};

/// XEP-0082 DateTime in UTC with second precision, e.g. `2026-11-22T23:59:01Z`.
pub fn xmpp_datetime(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
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

/// `<delay xmlns='urn:xmpp:delay' from='…' stamp='…'/>` (XEP-0203 §3).
pub fn delay_element(from: &str, at: SystemTime) -> Element {
    Element::new("delay", ns::DELAY).with_attr("from", from).with_attr("stamp", xmpp_datetime(at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn known_dates() {
        assert_eq!(xmpp_datetime(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        // 2000-02-29T12:34:56Z = 951827696
        assert_eq!(xmpp_datetime(UNIX_EPOCH + Duration::from_secs(951_827_696)), "2000-02-29T12:34:56Z");
        // 2026-11-22T00:00:00Z = 1795305600
        assert_eq!(xmpp_datetime(UNIX_EPOCH + Duration::from_secs(1_795_305_600)), "2026-11-22T00:00:00Z");
    }
}
