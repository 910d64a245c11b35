//! SASL PLAIN (RFC 4616).

use super::{saslprep, SaslFailure};

/// The three fields of a PLAIN message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlainCredentials {
    /// Requested authorization identity; None when empty.
    pub authzid: Option<String>,
    /// Authentication identity (the username), SASLprep'd.
    pub authcid: String,
    /// The password, SASLprep'd.
    pub password: String,
}

/// RFC 4616 §2: `[authzid] NUL authcid NUL passwd`, all UTF-8.
pub fn parse_plain(msg: &[u8]) -> Result<PlainCredentials, SaslFailure> {
    let mut parts = msg.split(|b| *b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslFailure::MalformedRequest);
    };
    let text =
        |b: &[u8]| std::str::from_utf8(b).map(str::to_owned).map_err(|_| SaslFailure::MalformedRequest);
    let authzid = text(authzid)?;
    let authcid = saslprep(&text(authcid)?)?;
    let password = saslprep(&text(password)?)?;
    if authcid.is_empty() || password.is_empty() {
        return Err(SaslFailure::MalformedRequest);
    }
    Ok(PlainCredentials { authzid: (!authzid.is_empty()).then_some(authzid), authcid, password })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        let c = parse_plain(b"\0alice\0secret").unwrap();
        assert_eq!((c.authzid, c.authcid.as_str(), c.password.as_str()), (None, "alice", "secret"));
        let c = parse_plain(b"alice@d\0alice\0pw").unwrap();
        assert_eq!(c.authzid.as_deref(), Some("alice@d"));
    }

    #[test]
    fn malformed() {
        for bad in [&b"alice\0pw"[..], b"", b"\0\0pw", b"\0a\0", b"\0a\0b\0c", b"\0\xff\0pw"] {
            assert_eq!(parse_plain(bad), Err(SaslFailure::MalformedRequest), "{bad:?}");
        }
    }
}
