//! When the served certificate expires: [`not_after`] reads `notAfter`
//! from a DER certificate (RFC 5280, 4.1.2.5), so the coordinator can export
//! it as `drover_api_tls_cert_expiry_timestamp_seconds`. A rotation that keeps
//! failing (an issuer down, a refused file) then shows as a date coming
//! closer, for an alert to catch before clients do. Only this one field is
//! wanted, so a few lines of DER walking stand in for an X.509 library.

/// `notAfter` of the certificate `der`, in Unix seconds; `None` when the
/// bytes are not the shape of a certificate.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (cert, _) = expect(der, SEQUENCE)?;
    let (mut tbs, _) = expect(cert, SEQUENCE)?;
    // version [0] EXPLICIT, optional (absent for v1 certificates)
    if tbs.first() == Some(&0xa0) {
        tbs = expect(tbs, 0xa0)?.1;
    }
    let (_, rest) = expect(tbs, INTEGER)?; // serialNumber
    let (_, rest) = expect(rest, SEQUENCE)?; // signature
    let (_, rest) = expect(rest, SEQUENCE)?; // issuer
    let (validity, _) = expect(rest, SEQUENCE)?;
    let (_, after) = element(validity)?; // notBefore
    let tag = *after.first()?;
    let (time, _) = element(after)?; // notAfter
    match tag {
        UTC_TIME => parse_time(time, 2),
        GENERALIZED_TIME => parse_time(time, 4),
        _ => None,
    }
}

const INTEGER: u8 = 0x02;
const SEQUENCE: u8 = 0x30;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The contents of the element at the start of `der` if its tag is `tag`,
/// and what follows it.
fn expect(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *der.first()? != tag {
        return None;
    }
    element(der)
}

/// The contents of the element at the start of `der` (any tag of one byte),
/// and what follows it.
fn element(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let first = *der.get(1)?;
    let (len, start) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let len = der.get(2..2 + n)?.iter().fold(0usize, |acc, b| acc << 8 | *b as usize);
        (len, 2 + n)
    };
    let end = start.checked_add(len)?;
    Some((der.get(start..end)?, der.get(end..)?))
}

/// `YYMMDDHHMMSSZ` (UTCTime, `year_digits` 2: 50-99 are 19xx) or
/// `YYYYMMDDHHMMSSZ` (GeneralizedTime, 4), as RFC 5280 requires them.
fn parse_time(text: &[u8], year_digits: usize) -> Option<i64> {
    if text.len() != year_digits + 11 || text.last() != Some(&b'Z') {
        return None;
    }
    let text = std::str::from_utf8(&text[..text.len() - 1]).ok()?;
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |from: usize, len: usize| text[from..from + len].parse::<i64>().ok();
    let mut year = num(0, year_digits)?;
    if year_digits == 2 {
        year += if year >= 50 { 1900 } else { 2000 };
    }
    let at = year_digits;
    let (month, day) = (num(at, 2)?, num(at + 2, 2)?);
    let (hour, minute, second) = (num(at + 4, 2)?, num(at + 6, 2)?, num(at + 8, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days from 1970-01-01 to the given date of the proleptic Gregorian
/// calendar (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    /// `openssl req -x509 -days 36500`: a notAfter (2126) in GeneralizedTime.
    const GENERALIZED: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBfDCCASGgAwIBAgIUITT3lzYEQbPRhG/v5vWVa9t6Bd4wCgYIKoZIzj0EAwIw\n\
EjEQMA4GA1UEAwwHZml4dHVyZTAgFw0yNjEyMDgwMDIwMTlaGA8yMTI2MTExNDAw\n\
MjAxOVowEjEQMA4GA1UEAwwHZml4dHVyZTBZMBMGByqGSM49AgEGCCqGSM49AwEH\n\
A0IABElA2/8ALpTy38dJmKlSh7v0GVQxmYuis2IJPY+H+Ax5wzfSRAIJynjJwn2g\n\
pc+HotBJzF/40mUxJh4l14oHNjGjUzBRMB0GA1UdDgQWBBSh11XXJtZ11SZfI9r0\n\
gxW9buJERTAfBgNVHSMEGDAWgBSh11XXJtZ11SZfI9r0gxW9buJERTAPBgNVHRMB\n\
Af8EBTADAQH/MAoGCCqGSM49BAMCA0kAMEYCIQCoATKkDGz7DSobVgwV/TnDE6ba\n\
7WAHQkmiSZ6E5fy7IwIhALGXvlSsdJQx6BpNa4ZZ7taeZ/JQjFO9LN5koD3aTTwK\n\
-----END CERTIFICATE-----";
    /// `-days 30`: a notAfter (2027) in UTCTime.
    const UTC: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBejCCAR+gAwIBAgIUW/kLJCaPMiBBlMEXsecTqcC5aNowCgYIKoZIzj0EAwIw\n\
EjEQMA4GA1UEAwwHZml4dHVyZTAeFw0yNjEyMDgwMDIwMTlaFw0yNzAxMDcwMDIw\n\
MTlaMBIxEDAOBgNVBAMMB2ZpeHR1cmUwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC\n\
AAS0pGukkQ06ql6KMat6sn74vUs8If5fO/9bAXmz2CmviIc0BT/mk++2V7hKenLl\n\
X76F1IZx3ns6ELDlKgWe84l6o1MwUTAdBgNVHQ4EFgQU7eAGWXkHLI/WQnaPlsUZ\n\
5IIaJLgwHwYDVR0jBBgwFoAU7eAGWXkHLI/WQnaPlsUZ5IIaJLgwDwYDVR0TAQH/\n\
BAUwAwEB/zAKBggqhkjOPQQDAgNJADBGAiEAxU/01L2s4mHyEEPIwLbju+yISeMx\n\
Aii6jqY4nOJmMNMCIQDeu2R9S/qcA4s0xZ89L2qyEvXjzTY6ojCerMgKXzBPkw==\n\
-----END CERTIFICATE-----";

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
    }

    #[test]
    fn not_after_reads_both_time_forms_as_openssl_prints_them() {
        // `date -d "$(openssl x509 -noout -enddate ...)" +%s`
        assert_eq!(not_after(&der(GENERALIZED)), Some(4_950_289_219));
        assert_eq!(not_after(&der(UTC)), Some(1_799_281_219));
    }

    #[test]
    fn what_is_not_a_certificate_has_no_date() {
        assert_eq!(not_after(b""), None);
        assert_eq!(not_after(&[0x30, 0x03, 0x02, 0x01]), None);
        let mut cut = der(UTC);
        cut.truncate(90);
        assert_eq!(not_after(&cut), None);
    }

    #[test]
    fn times_convert_to_unix_seconds() {
        assert_eq!(parse_time(b"700101000000Z", 2), Some(0));
        assert_eq!(parse_time(b"491231235959Z", 2), Some(2_524_607_999));
        assert_eq!(parse_time(b"500101000000Z", 2), Some(-631_152_000));
        assert_eq!(parse_time(b"20000229120000Z", 4), Some(951_825_600));
        assert_eq!(parse_time(b"20001301000000Z", 4), None);
        assert_eq!(parse_time(b"2000010100000Z", 4), None);
    }
}
