//! How both backends store an account's SCRAM credentials.
//!
//! Every login reads them, so they are kept in a small binary form rather than JSON (decoding
//! the JSON of two mechanisms' credentials cost more than the rest of the store read):
//!
//! ```text
//! 0x01                      format version
//! count: u8                 credentials that follow, one per mechanism
//! per credential:
//!   hash: u8                1 = SHA-1, 2 = SHA-256
//!   iterations: u32 (LE)
//!   salt, stored key, server key: each a u16 (LE) length and the bytes
//! ```
//!
//! Values written before this form (a JSON list) still read; they are rewritten in the new form
//! when the password next changes.

use starling_xmpp::sasl::{ScramCredentials, ScramHash};

/// A stored credentials value that cannot be read (or credentials that cannot be written).
#[derive(Debug, thiserror::Error)]
pub enum CredentialsCodecError {
    /// The value ends before its last field.
    #[error("stored credentials are truncated")]
    Truncated,
    /// Bytes remain after the last credential.
    #[error("stored credentials have trailing bytes")]
    Trailing,
    /// The value starts with neither the binary form's version nor a JSON list.
    #[error("stored credentials have unknown format {0:#04x}")]
    UnknownFormat(u8),
    /// A credential names a hash this version does not know.
    #[error("stored credentials name unknown hash {0}")]
    UnknownHash(u8),
    /// The value of the earlier JSON form does not parse.
    #[error("stored credentials (JSON form): {0}")]
    Json(#[from] serde_json::Error),
    /// More credentials, or a longer field, than the form can hold.
    #[error("credentials too large to store")]
    TooLarge,
}

const VERSION: u8 = 1;

fn hash_code(hash: ScramHash) -> u8 {
    match hash {
        ScramHash::Sha1 => 1,
        ScramHash::Sha256 => 2,
    }
}

/// The stored form of an account's credentials.
pub fn encode_credentials(creds: &[ScramCredentials]) -> Result<Vec<u8>, CredentialsCodecError> {
    let count = u8::try_from(creds.len()).map_err(|_| CredentialsCodecError::TooLarge)?;
    let mut out = Vec::with_capacity(
        2 + creds.iter().map(|c| 11 + c.salt.len() + 2 * c.stored_key.len()).sum::<usize>(),
    );
    out.extend_from_slice(&[VERSION, count]);
    for c in creds {
        out.push(hash_code(c.hash));
        out.extend_from_slice(&c.iterations.to_le_bytes());
        for field in [&c.salt, &c.stored_key, &c.server_key] {
            let len = u16::try_from(field.len()).map_err(|_| CredentialsCodecError::TooLarge)?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(field);
        }
    }
    Ok(out)
}

/// Read a stored value: the binary form, or the JSON list of earlier versions.
pub fn decode_credentials(bytes: &[u8]) -> Result<Vec<ScramCredentials>, CredentialsCodecError> {
    match bytes.first() {
        Some(&VERSION) => {}
        Some(b'[' | b' ' | b'\t' | b'\r' | b'\n') => return Ok(serde_json::from_slice(bytes)?),
        Some(&other) => return Err(CredentialsCodecError::UnknownFormat(other)),
        None => return Err(CredentialsCodecError::Truncated),
    }
    let mut r = Reader { rest: &bytes[1..] };
    let count = r.take(1)?[0];
    let mut out = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let hash = match r.take(1)?[0] {
            1 => ScramHash::Sha1,
            2 => ScramHash::Sha256,
            other => return Err(CredentialsCodecError::UnknownHash(other)),
        };
        let iterations = u32::from_le_bytes(r.array()?);
        let salt = r.field()?;
        let stored_key = r.field()?;
        let server_key = r.field()?;
        out.push(ScramCredentials { hash, salt, iterations, stored_key, server_key });
    }
    if !r.rest.is_empty() {
        return Err(CredentialsCodecError::Trailing);
    }
    Ok(out)
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CredentialsCodecError> {
        if self.rest.len() < n {
            return Err(CredentialsCodecError::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CredentialsCodecError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn field(&mut self) -> Result<Vec<u8>, CredentialsCodecError> {
        let len = u16::from_le_bytes(self.array()?);
        Ok(self.take(usize::from(len))?.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both() -> Vec<ScramCredentials> {
        vec![
            ScramCredentials::derive(ScramHash::Sha1, "pw", b"salt-one", 4096).unwrap(),
            ScramCredentials::derive(ScramHash::Sha256, "pw", b"salt-two", 5000).unwrap(),
        ]
    }

    #[test]
    fn credentials_read_back_as_written() {
        let creds = both();
        let bytes = encode_credentials(&creds).unwrap();
        assert_eq!(bytes[..2], [VERSION, 2]);
        let read = decode_credentials(&bytes).unwrap();
        assert_eq!(read, creds);
        assert!(read[0].verify_password("pw") && !read[1].verify_password("other"));
        assert_eq!(decode_credentials(&encode_credentials(&[]).unwrap()).unwrap(), vec![]);
    }

    #[test]
    fn the_earlier_json_form_still_reads() {
        let creds = both();
        let json = serde_json::to_vec(&creds).unwrap();
        assert_eq!(decode_credentials(&json).unwrap(), creds);
    }

    #[test]
    fn damaged_values_are_errors_not_panics() {
        let bytes = encode_credentials(&both()).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode_credentials(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(decode_credentials(&longer), Err(CredentialsCodecError::Trailing)));
        let mut bad_hash = bytes.clone();
        bad_hash[2] = 9;
        assert!(matches!(decode_credentials(&bad_hash), Err(CredentialsCodecError::UnknownHash(9))));
        assert!(matches!(decode_credentials(&[7, 0]), Err(CredentialsCodecError::UnknownFormat(7))));
        assert!(matches!(decode_credentials(b"[1,"), Err(CredentialsCodecError::Json(_))));
    }
}
