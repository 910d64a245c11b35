//! SASL for XMPP (RFC 6120 §6), server side: SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677)
//! and PLAIN (RFC 4616), plus a SCRAM client for our own tests and the load generator.
//!
//! Everything here works on the raw SASL payloads: the caller base64-decodes the text of
//! `<auth/>` and `<response/>` (a decoding error is [`SaslFailure::IncorrectEncoding`], RFC 6120
//! §6.5.5) and base64-encodes what goes into `<challenge/>` and `<success/>` (RFC 6120 §6.4.2–§6.4.6).
//!
//! Only SCRAM credentials (salt, iteration count, StoredKey, ServerKey; RFC 5802 §2.2, §3) are
//! ever stored. PLAIN is checked by deriving StoredKey from the offered password
//! ([`ScramCredentials::verify_password`]).
//!
//! No function in this module panics on any input, and calling the steps of an exchange out of
//! order is answered with [`SaslFailure::MalformedRequest`].

mod plain;
mod scram;

pub use plain::{parse_plain, PlainCredentials};
pub use scram::{ScramClient, ScramClientFirst, ScramCredentials, ScramHash, ScramServer};

/// SASL failure conditions (RFC 6120 §6.5); each is the name of the child element sent inside
/// `<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SaslFailure {
    /// RFC 6120 §6.5.1: the client aborted the exchange.
    #[error("aborted")]
    Aborted,
    /// RFC 6120 §6.5.2: the account is temporarily disabled.
    #[error("account-disabled")]
    AccountDisabled,
    /// RFC 6120 §6.5.3: the credentials have expired.
    #[error("credentials-expired")]
    CredentialsExpired,
    /// RFC 6120 §6.5.4: the mechanism may only be used over an encrypted stream.
    #[error("encryption-required")]
    EncryptionRequired,
    /// RFC 6120 §6.5.5: the base64 encoding of the payload is incorrect.
    #[error("incorrect-encoding")]
    IncorrectEncoding,
    /// RFC 6120 §6.5.6: the requested authorization identity is invalid or not allowed.
    #[error("invalid-authzid")]
    InvalidAuthzid,
    /// RFC 6120 §6.5.7: the mechanism is not supported.
    #[error("invalid-mechanism")]
    InvalidMechanism,
    /// RFC 6120 §6.5.8: the request violates the syntax of the mechanism, or came out of order.
    #[error("malformed-request")]
    MalformedRequest,
    /// RFC 6120 §6.5.9: the mechanism is weaker than policy allows.
    #[error("mechanism-too-weak")]
    MechanismTooWeak,
    /// RFC 6120 §6.5.10: the credentials are wrong (or the user does not exist).
    #[error("not-authorized")]
    NotAuthorized,
    /// RFC 6120 §6.5.11: a temporary error on the server (e.g. no randomness); try again later.
    #[error("temporary-auth-failure")]
    TemporaryAuthFailure,
}

impl SaslFailure {
    /// Every condition, in RFC 6120 §6.5 order.
    pub const ALL: [SaslFailure; 11] = [
        SaslFailure::Aborted,
        SaslFailure::AccountDisabled,
        SaslFailure::CredentialsExpired,
        SaslFailure::EncryptionRequired,
        SaslFailure::IncorrectEncoding,
        SaslFailure::InvalidAuthzid,
        SaslFailure::InvalidMechanism,
        SaslFailure::MalformedRequest,
        SaslFailure::MechanismTooWeak,
        SaslFailure::NotAuthorized,
        SaslFailure::TemporaryAuthFailure,
    ];

    /// The condition's element name, e.g. `"not-authorized"`, `"malformed-request"`.
    pub fn condition(self) -> &'static str {
        match self {
            SaslFailure::Aborted => "aborted",
            SaslFailure::AccountDisabled => "account-disabled",
            SaslFailure::CredentialsExpired => "credentials-expired",
            SaslFailure::EncryptionRequired => "encryption-required",
            SaslFailure::IncorrectEncoding => "incorrect-encoding",
            SaslFailure::InvalidAuthzid => "invalid-authzid",
            SaslFailure::InvalidMechanism => "invalid-mechanism",
            SaslFailure::MalformedRequest => "malformed-request",
            SaslFailure::MechanismTooWeak => "mechanism-too-weak",
            SaslFailure::NotAuthorized => "not-authorized",
            SaslFailure::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }

    /// The condition for an element name (the inverse of [`SaslFailure::condition`]), for
    /// clients reading a `<failure/>`.
    pub fn from_condition(name: &str) -> Option<SaslFailure> {
        SaslFailure::ALL.into_iter().find(|f| f.condition() == name)
    }
}

/// Compare two secrets in time that depends only on their lengths (not on where they differ).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // black_box keeps the optimiser from turning the fold into an early exit.
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(diff) == 0
}

/// RFC 4013 SASLprep of a username or password (RFC 5802 §5.1, RFC 4616 §2). A string SASLprep
/// rejects (prohibited output, bidi rules) is a malformed request.
pub(crate) fn saslprep(s: &str) -> Result<String, SaslFailure> {
    stringprep::saslprep(s).map(|c| c.into_owned()).map_err(|_| SaslFailure::MalformedRequest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_round_trip() {
        for f in SaslFailure::ALL {
            assert_eq!(SaslFailure::from_condition(f.condition()), Some(f));
            assert_eq!(f.to_string(), f.condition());
        }
        assert_eq!(SaslFailure::NotAuthorized.condition(), "not-authorized");
        assert_eq!(SaslFailure::MalformedRequest.condition(), "malformed-request");
        assert_eq!(SaslFailure::from_condition("bogus"), None);
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn saslprep_rfc4013_examples() {
        // RFC 4013 §3: SOFT HYPHEN is mapped to nothing, NBSP to SPACE, U+0007 is prohibited.
        assert_eq!(saslprep("I\u{00AD}X").unwrap(), "IX");
        assert_eq!(saslprep("a\u{00A0}b").unwrap(), "a b");
        assert_eq!(saslprep("\u{2168}").unwrap(), "IX");
        assert_eq!(saslprep("\u{0007}"), Err(SaslFailure::MalformedRequest));
    }
}
