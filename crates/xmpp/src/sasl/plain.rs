//! SASL PLAIN (RFC 4616), server side: parsing the single client message.
//!
//! PLAIN sends the password in the clear, so the caller offers it only over TLS (RFC 6120 §6.4.1,
//! RFC 4616 §5) and checks the password with [`super::ScramCredentials::verify_password`].

use super::{saslprep, SaslFailure};

/// The three fields of a PLAIN message (RFC 4616 §2).
#[derive(Clone, PartialEq, Eq)]
pub struct PlainCredentials {
    /// The requested authorization identity; `None` when the field is empty.
    pub authzid: Option<String>,
    /// The authentication identity (the username), SASLprep'd (RFC 4616 §2, RFC 4013).
    pub authcid: String,
    /// The password, SASLprep'd.
    pub password: String,
}

/// Never prints the password.
impl std::fmt::Debug for PlainCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainCredentials")
            .field("authzid", &self.authzid)
            .field("authcid", &self.authcid)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Parse a PLAIN message (RFC 4616 §2):
///
/// ```text
/// message = [authzid] UTF8NUL authcid UTF8NUL passwd
/// ```
///
/// An empty authzid gives `None`. Errors, all [`SaslFailure::MalformedRequest`] (RFC 6120 §6.5.8:
/// the data violates the mechanism's syntax): not exactly two NULs; a field that is not UTF-8
/// (RFC 4616 §2: "the server MUST ... fail"); an authcid or password that SASLprep rejects or that
/// is empty (both are `1*SAFE`). [`SaslFailure::IncorrectEncoding`] is reserved for bad base64 of
/// the payload itself (RFC 6120 §6.5.5), which the caller detects before calling this.
pub fn parse_plain(msg: &[u8]) -> Result<PlainCredentials, SaslFailure> {
    let mut parts = msg.split(|b| *b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslFailure::MalformedRequest);
    };
    let authzid = utf8(authzid)?;
    let authcid = saslprep(utf8(authcid)?)?;
    let password = saslprep(utf8(password)?)?;
    if authcid.is_empty() || password.is_empty() {
        return Err(SaslFailure::MalformedRequest);
    }
    Ok(PlainCredentials { authzid: (!authzid.is_empty()).then(|| authzid.to_owned()), authcid, password })
}

/// RFC 4616 §2: every field is UTF-8, else the message is malformed.
fn utf8(b: &[u8]) -> Result<&str, SaslFailure> {
    std::str::from_utf8(b).map_err(|_| SaslFailure::MalformedRequest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn without_authzid() {
        let c = parse_plain(b"\0alice\0secret").unwrap();
        assert_eq!(c.authzid, None);
        assert_eq!(c.authcid, "alice");
        assert_eq!(c.password, "secret");
    }

    #[test]
    fn with_authzid() {
        // RFC 4616 §4 example 2 shape: authzid "Ursel", authcid "Kurt", password "xipj3plmq".
        let c = parse_plain(b"Ursel\0Kurt\0xipj3plmq").unwrap();
        assert_eq!(c.authzid.as_deref(), Some("Ursel"));
        assert_eq!(c.authcid, "Kurt");
        assert_eq!(c.password, "xipj3plmq");
        let c = parse_plain(b"alice@example.com\0alice\0pw").unwrap();
        assert_eq!(c.authzid.as_deref(), Some("alice@example.com"));
    }

    #[test]
    fn utf8_and_saslprep() {
        let c = parse_plain("\0j\u{00FC}rgen\0p\u{00E4}ss\u{00A0}word".as_bytes()).unwrap();
        assert_eq!(c.authcid, "j\u{00FC}rgen");
        // RFC 4013 §2.1: non-ASCII space maps to SPACE; a soft hyphen maps to nothing.
        assert_eq!(c.password, "p\u{00E4}ss word");
        assert_eq!(parse_plain(b"\0I\xC2\xADX\0pw").unwrap().authcid, "IX");
        // Spaces inside a password are kept as they are.
        assert_eq!(parse_plain(b"\0a\0 two words ").unwrap().password, " two words ");
    }

    #[test]
    fn missing_nuls_and_empty_fields() {
        for bad in [
            &b""[..],
            b"alice",
            b"alice\0pw",
            b"\0alice",
            b"\0\0pw",
            b"\0a\0",
            b"\0\0",
            b"\0a\0b\0c",
            b"z\0a\0b\0",
        ] {
            assert_eq!(parse_plain(bad), Err(SaslFailure::MalformedRequest), "{bad:?}");
        }
    }

    #[test]
    fn invalid_utf8() {
        for bad in [&b"\0\xff\0pw"[..], b"\0alice\0\xc3", b"\xfe\0alice\0pw", b"\0al\xedice\0pw"] {
            assert_eq!(parse_plain(bad), Err(SaslFailure::MalformedRequest), "{bad:?}");
        }
    }

    #[test]
    fn prohibited_characters() {
        // RFC 4013 §2.3: control characters are prohibited output.
        assert_eq!(parse_plain(b"\0al\x07ice\0pw"), Err(SaslFailure::MalformedRequest));
        assert_eq!(parse_plain(b"\0alice\0p\x7fw"), Err(SaslFailure::MalformedRequest));
    }

    #[test]
    fn debug_hides_the_password() {
        let c = parse_plain(b"\0alice\0hunter2").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(msg in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_plain(&msg);
        }

        #[test]
        fn well_formed_messages_parse(z in "[a-z@.]{0,12}", c in "[a-z]{1,12}", p in "[ -~]{1,20}") {
            let c2 = parse_plain(format!("{z}\0{c}\0{p}").as_bytes()).unwrap();
            prop_assert_eq!(c2.authzid, (!z.is_empty()).then_some(z));
            prop_assert_eq!(c2.authcid, c);
            prop_assert_eq!(c2.password, p);
        }
    }
}
