//! SASL for XMPP (RFC 6120 §6): SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677) and PLAIN
//! (RFC 4616), server side, plus a SCRAM client for tests and load generation.
//!
//! Only SCRAM credentials (salted, iterated keys) are ever stored; PLAIN is checked by deriving
//! the same keys from the offered password.

mod plain;
mod scram;

pub use plain::{parse_plain, PlainCredentials};
pub use scram::{ScramClient, ScramClientFirst, ScramCredentials, ScramHash, ScramServer};

/// SASL failure conditions (RFC 6120 §6.5); each is the element name sent inside `<failure/>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SaslFailure {
    /// §6.5.1: the client aborted.
    #[error("aborted")]
    Aborted,
    /// §6.5.2: the account is disabled.
    #[error("account-disabled")]
    AccountDisabled,
    /// §6.5.3: the credentials expired.
    #[error("credentials-expired")]
    CredentialsExpired,
    /// §6.5.4: the mechanism needs an encrypted stream.
    #[error("encryption-required")]
    EncryptionRequired,
    /// §6.5.5: bad base64.
    #[error("incorrect-encoding")]
    IncorrectEncoding,
    /// §6.5.6: the authorization identity is not allowed.
    #[error("invalid-authzid")]
    InvalidAuthzid,
    /// §6.5.7: unknown mechanism.
    #[error("invalid-mechanism")]
    InvalidMechanism,
    /// §6.5.8: the request is malformed.
    #[error("malformed-request")]
    MalformedRequest,
    /// §6.5.9: the mechanism is too weak.
    #[error("mechanism-too-weak")]
    MechanismTooWeak,
    /// §6.5.10: wrong credentials.
    #[error("not-authorized")]
    NotAuthorized,
    /// §6.5.11: try again later.
    #[error("temporary-auth-failure")]
    TemporaryAuthFailure,
}

impl SaslFailure {
    /// The condition's element name.
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
}

/// Compare two secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// RFC 4013 SASLprep of a password or username.
pub(crate) fn saslprep(s: &str) -> Result<String, SaslFailure> {
    stringprep::saslprep(s).map(|c| c.into_owned()).map_err(|_| SaslFailure::MalformedRequest)
}
