//! SCRAM (RFC 5802) with SHA-1 and SHA-256 (RFC 7677), without channel binding.
//!
//! The algorithm (RFC 5802 §3):
//!
//! ```text
//! SaltedPassword  := Hi(Normalize(password), salt, i)      -- PBKDF2 with HMAC
//! ClientKey       := HMAC(SaltedPassword, "Client Key")
//! StoredKey       := H(ClientKey)
//! AuthMessage     := client-first-message-bare + "," + server-first-message + ","
//!                    + client-final-message-without-proof
//! ClientSignature := HMAC(StoredKey, AuthMessage)
//! ClientProof     := ClientKey XOR ClientSignature
//! ServerKey       := HMAC(SaltedPassword, "Server Key")
//! ServerSignature := HMAC(ServerKey, AuthMessage)
//! ```
//!
//! The server keeps StoredKey and ServerKey ([`ScramCredentials`]); it recovers ClientKey from the
//! proof, hashes it and compares with StoredKey in constant time. Message syntax: RFC 5802 §7.

use super::{constant_time_eq, saslprep, SaslFailure};
use ::hmac::{Hmac, Mac};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::{digest, hmac as ring_hmac, pbkdf2};
use sha1::{Digest, Sha1};
use std::fmt::Write;
use std::num::NonZeroU32;

/// Iteration count of decoy credentials: RFC 7677 §4's minimum, and Starling's default.
const DECOY_ITERATIONS: u32 = 4096;
/// Length of generated salts (and decoy salts, so the two look alike).
const SALT_LEN: usize = 16;
/// Random bytes in a server nonce part (base64-encoded to 32 printable characters).
const SERVER_NONCE_BYTES: usize = 24;

/// The hash function of a SCRAM mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ScramHash {
    /// SCRAM-SHA-1 (RFC 5802 §4).
    Sha1,
    /// SCRAM-SHA-256 (RFC 7677 §2).
    Sha256,
}

impl ScramHash {
    /// The SASL mechanism name: `"SCRAM-SHA-1"` or `"SCRAM-SHA-256"`.
    pub fn mechanism(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SCRAM-SHA-1",
            ScramHash::Sha256 => "SCRAM-SHA-256",
        }
    }

    /// The hash for a mechanism name (exact, upper case as registered; RFC 4422 §3.1). The
    /// channel-binding `-PLUS` variants are not supported and give `None`.
    pub fn from_mechanism(name: &str) -> Option<ScramHash> {
        match name {
            "SCRAM-SHA-1" => Some(ScramHash::Sha1),
            "SCRAM-SHA-256" => Some(ScramHash::Sha256),
            _ => None,
        }
    }

    /// Output length of H() and HMAC() in bytes.
    fn output_len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
        }
    }

    /// HMAC(key, data) (RFC 5802 §2.2).
    ///
    /// SHA-1 comes from the `sha1` crate, which uses the CPU's SHA extensions where it has them:
    /// ring's SHA-1 is portable code, several times slower, and SCRAM-SHA-1 is what most clients
    /// still pick. SHA-256 stays with ring, whose SHA-256 is already accelerated.
    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => hmac_sha1(key).chain_update(data).finalize().into_bytes().to_vec(),
            ScramHash::Sha256 => {
                ring_hmac::sign(&ring_hmac::Key::new(ring_hmac::HMAC_SHA256, key), data).as_ref().to_vec()
            }
        }
    }

    /// H(data) (RFC 5802 §2.2).
    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => digest::digest(&digest::SHA256, data).as_ref().to_vec(),
        }
    }

    /// Hi(password, salt, i) of RFC 5802 §2.2, which is PBKDF2 (RFC 2898) with HMAC as PRF and
    /// one output block. `password` must already be SASLprep'd. An iteration count of 0 (invalid)
    /// is treated as 1 so that nothing here can panic; callers reject it before.
    fn salted_password(self, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
        let iterations = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
        match self {
            ScramHash::Sha1 => {
                // Hi: U1 = HMAC(password, salt || INT(1)), Ui = HMAC(password, Ui-1), the XOR
                // of all. The keyed state is made once and cloned for each U.
                let keyed = hmac_sha1(password.as_bytes());
                let mut u =
                    keyed.clone().chain_update(salt).chain_update(1u32.to_be_bytes()).finalize().into_bytes();
                let mut out = u;
                for _ in 1..iterations.get() {
                    u = keyed.clone().chain_update(u).finalize().into_bytes();
                    out.iter_mut().zip(&u).for_each(|(o, x)| *o ^= x);
                }
                out.to_vec()
            }
            ScramHash::Sha256 => {
                let mut out = vec![0u8; self.output_len()];
                pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, salt, password.as_bytes(), &mut out);
                out
            }
        }
    }

    /// (ClientKey, StoredKey, ServerKey) from SaltedPassword (RFC 5802 §3).
    fn keys(self, salted: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let client_key = self.hmac(salted, b"Client Key");
        let stored_key = self.hash(&client_key);
        (client_key, stored_key, self.hmac(salted, b"Server Key"))
    }
}

/// The parts one after the other, in a string allocated once at its final size (`format!`
/// guesses the size and grows the string as it writes).
fn joined(parts: &[&str]) -> String {
    let mut s = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    parts.iter().for_each(|p| s.push_str(p));
    s
}

/// HMAC-SHA-1 keyed with `key` (any length: longer keys are hashed first, RFC 2104).
fn hmac_sha1(key: &[u8]) -> Hmac<Sha1> {
    // `new_from_slice` cannot fail for HMAC, which takes keys of any length; the fallback is
    // only there so that nothing here can panic.
    Hmac::<Sha1>::new_from_slice(key).unwrap_or_else(|_| Hmac::<Sha1>::new(&Default::default()))
}

/// Fill `buf` with unpredictable bytes (see [`crate::random`]).
fn fill_random(buf: &mut [u8]) -> Result<(), SaslFailure> {
    crate::random::fill(buf).map_err(|_| SaslFailure::TemporaryAuthFailure)
}

/// What the server stores for an account: never the password (RFC 5802 §2.2, §3).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScramCredentials {
    /// The mechanism these credentials are for.
    pub hash: ScramHash,
    /// The salt sent in server-first-message (`s=`).
    #[serde(with = "base64_bytes")]
    pub salt: Vec<u8>,
    /// The PBKDF2 iteration count sent in server-first-message (`i=`).
    pub iterations: u32,
    /// StoredKey = H(HMAC(SaltedPassword, "Client Key")).
    #[serde(with = "base64_bytes")]
    pub stored_key: Vec<u8>,
    /// ServerKey = HMAC(SaltedPassword, "Server Key").
    #[serde(with = "base64_bytes")]
    pub server_key: Vec<u8>,
}

/// Byte strings of stored credentials as base64 text. Every login reads them, and a list of
/// numbers (serde's default for bytes) cost a tenth of a login's CPU to parse. Reading still
/// accepts that older form, so stores written before keep working.
mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_any(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("base64 text or a list of bytes")
        }

        fn visit_str<E: Error>(self, v: &str) -> Result<Vec<u8>, E> {
            STANDARD.decode(v).map_err(E::custom)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(32));
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}

impl ScramCredentials {
    /// Derive from a password with this salt and iteration count. The password is SASLprep'd
    /// first (RFC 5802 §2.2 Normalize(), RFC 4013). A password SASLprep rejects, an empty one, or
    /// an iteration count of 0 gives [`SaslFailure::MalformedRequest`].
    pub fn derive(
        hash: ScramHash,
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Result<ScramCredentials, SaslFailure> {
        let password = saslprep(password)?;
        if password.is_empty() || iterations == 0 {
            return Err(SaslFailure::MalformedRequest);
        }
        let salted = hash.salted_password(&password, salt, iterations);
        let (_, stored_key, server_key) = hash.keys(&salted);
        Ok(ScramCredentials { hash, salt: salt.to_vec(), iterations, stored_key, server_key })
    }

    /// [`ScramCredentials::derive`] with a fresh random 16-byte salt. A failing system RNG gives
    /// [`SaslFailure::TemporaryAuthFailure`].
    pub fn generate(
        hash: ScramHash,
        password: &str,
        iterations: u32,
    ) -> Result<ScramCredentials, SaslFailure> {
        let mut salt = [0u8; SALT_LEN];
        fill_random(&mut salt)?;
        ScramCredentials::derive(hash, password, &salt, iterations)
    }

    /// Check a clear password (SASL PLAIN) against these credentials: derive StoredKey from it
    /// with the stored salt and iteration count and compare in constant time. False for a
    /// password SASLprep rejects.
    pub fn verify_password(&self, password: &str) -> bool {
        let Ok(password) = saslprep(password) else { return false };
        if password.is_empty() || self.iterations == 0 {
            return false;
        }
        let salted = self.hash.salted_password(&password, &self.salt, self.iterations);
        let (_, stored_key, _) = self.hash.keys(&salted);
        constant_time_eq(&stored_key, &self.stored_key)
    }

    /// Credentials for a user that does not exist, so that the exchange looks the same as for a
    /// real user and ends in [`SaslFailure::NotAuthorized`] (no user enumeration; RFC 5802 §9
    /// suggests such "dummy" exchanges). The salt is HMAC(server_secret, username) cut to 16
    /// bytes, stable across attempts like a real salt; the iteration count is 4096 (Starling's
    /// default; see [`ScramCredentials::decoy_with_iterations`] for another); the keys are random,
    /// so no proof verifies (finding one needs a preimage of StoredKey).
    pub fn decoy(hash: ScramHash, username: &str, server_secret: &[u8]) -> ScramCredentials {
        ScramCredentials::decoy_with_iterations(hash, username, server_secret, DECOY_ITERATIONS)
    }

    /// [`ScramCredentials::decoy`] with the iteration count real accounts use, so `i=` does not
    /// tell decoys apart either. An iteration count of 0 is replaced by 4096.
    pub fn decoy_with_iterations(
        hash: ScramHash,
        username: &str,
        server_secret: &[u8],
        iterations: u32,
    ) -> ScramCredentials {
        let mut salt = hash.hmac(server_secret, username.as_bytes());
        salt.truncate(SALT_LEN);
        let key = |label: &[u8]| {
            let mut k = vec![0u8; hash.output_len()];
            if fill_random(&mut k).is_err() {
                // No randomness: keys derived from the secret are just as unguessable.
                k = hash.hmac(server_secret, &[label, username.as_bytes()].concat());
            }
            k
        };
        ScramCredentials {
            hash,
            salt,
            iterations: if iterations == 0 { DECOY_ITERATIONS } else { iterations },
            stored_key: key(b"decoy stored key\0"),
            server_key: key(b"decoy server key\0"),
        }
    }
}

/// The parsed client-first-message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramClientFirst {
    /// The username (`n=`), with `=2C` / `=3D` unescaped and SASLprep'd (RFC 5802 §5.1).
    pub username: String,
    /// The authorization identity from the GS2 header (`a=`), unescaped, if any (RFC 5802 §5.1).
    pub authzid: Option<String>,
}

/// RFC 5802 §5.1 / §7: `saslname` with `=2C` for ',' and `=3D` for '='; any other '=' is an error.
fn unescape_saslname(s: &str) -> Result<String, SaslFailure> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(rest.get(..i).unwrap_or_default());
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(SaslFailure::MalformedRequest),
        }
        rest = rest.get(i + 3..).unwrap_or_default();
    }
    out.push_str(rest);
    Ok(out)
}

/// The inverse of [`unescape_saslname`].
fn escape_saslname(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

/// RFC 5802 §7: `printable = %x21-2B / %x2D-7E` (printable ASCII except ','), at least one.
fn valid_nonce(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// RFC 5802 §7: `attr-val = ALPHA "=" value` (used to check extensions).
fn is_attr_val(field: &str) -> bool {
    let b = field.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b'='
}

/// Take the next comma-separated field, which must be `<attr>=…`; returns the value.
fn attr<'a>(fields: &mut std::str::Split<'a, char>, name: char) -> Result<&'a str, SaslFailure> {
    let field = fields.next().ok_or(SaslFailure::MalformedRequest)?;
    let mut chars = field.chars();
    match (chars.next(), chars.next()) {
        (Some(c), Some('=')) if c == name => Ok(chars.as_str()),
        _ => Err(SaslFailure::MalformedRequest),
    }
}

/// Whatever fields remain must be extensions (`attr-val`); a mandatory extension (`m=`) cannot
/// appear there, and unknown optional ones are ignored (RFC 5802 §5.1).
fn check_extensions(fields: std::str::Split<'_, char>) -> Result<(), SaslFailure> {
    for f in fields {
        if !is_attr_val(f) || f.starts_with("m=") {
            return Err(SaslFailure::MalformedRequest);
        }
    }
    Ok(())
}

/// Where a server-side exchange stands.
enum ServerState {
    /// Waiting for client-first-message.
    Start,
    /// client-first-message parsed; waiting for the caller's credentials.
    GotFirst { gs2_header: String, client_first_bare: String, client_nonce: String },
    /// server-first-message sent; waiting for client-final-message.
    SentFirst {
        gs2_header: String,
        /// client-first-message-bare "," server-first-message
        auth_prefix: String,
        nonce: String,
        stored_key: Vec<u8>,
        server_key: Vec<u8>,
    },
    /// Finished, successfully or not, or a step came out of order: every further call fails.
    Done,
}

impl ServerState {
    fn name(&self) -> &'static str {
        match self {
            ServerState::Start => "start",
            ServerState::GotFirst { .. } => "got-client-first",
            ServerState::SentFirst { .. } => "sent-server-first",
            ServerState::Done => "done",
        }
    }
}

/// One SCRAM exchange on the server side (RFC 5802 §5). Messages are the raw (base64-decoded)
/// SASL payloads. The steps are [`ScramServer::client_first`], [`ScramServer::server_first`] and
/// [`ScramServer::client_final`], in that order; anything out of order fails with
/// [`SaslFailure::MalformedRequest`] and ends the exchange.
pub struct ScramServer {
    hash: ScramHash,
    server_nonce: String,
    /// The system RNG failed while making the nonce: refuse, since a predictable server nonce
    /// would allow replays (RFC 5802 §9).
    rng_failed: bool,
    state: ServerState,
}

/// Shows no keys.
impl std::fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramServer").field("hash", &self.hash).field("state", &self.state.name()).finish()
    }
}

impl ScramServer {
    /// A new exchange with a random server nonce part (24 random bytes, base64: 32 characters).
    pub fn new(hash: ScramHash) -> ScramServer {
        let mut bytes = [0u8; SERVER_NONCE_BYTES];
        let rng_failed = fill_random(&mut bytes).is_err();
        let mut server = ScramServer::with_nonce(hash, &B64.encode(bytes));
        server.rng_failed = rng_failed;
        server
    }

    /// A new exchange with a given server nonce part (for test vectors). It must be printable
    /// ASCII without ',' (RFC 5802 §7); otherwise [`ScramServer::client_first`] refuses with
    /// [`SaslFailure::TemporaryAuthFailure`].
    pub fn with_nonce(hash: ScramHash, server_nonce_part: &str) -> ScramServer {
        ScramServer {
            hash,
            server_nonce: server_nonce_part.to_owned(),
            rng_failed: false,
            state: ServerState::Start,
        }
    }

    /// The mechanism's hash.
    pub fn hash(&self) -> ScramHash {
        self.hash
    }

    /// Parse client-first-message (RFC 5802 §5.1, §7):
    ///
    /// ```text
    /// gs2-cbind-flag "," [ "a=" saslname ] "," [ "m=" ... "," ] "n=" saslname "," "r=" c-nonce [ "," extensions ]
    /// ```
    ///
    /// The GS2 channel-binding flag may be `n` (client does not support channel binding) or `y`
    /// (client does, but thinks the server does not — true, since Starling never offers the
    /// `-PLUS` mechanisms, so RFC 5802 §6 lets the exchange go on). `p=` (client requires channel
    /// binding) gives [`SaslFailure::MalformedRequest`]: we never advertised a `-PLUS` mechanism,
    /// so the request does not fit the mechanism in use. A reserved mandatory extension (`m=`)
    /// also gives [`SaslFailure::MalformedRequest`] (RFC 5802 §5.1: "the server MUST fail").
    /// So does a username that is badly escaped, empty, or rejected by SASLprep, an empty
    /// authzid, or a nonce outside `printable`.
    ///
    /// Returns the username and the authzid, which the caller must check (RFC 6120 §6.4.6;
    /// [`SaslFailure::InvalidAuthzid`] if not allowed).
    pub fn client_first(&mut self, msg: &[u8]) -> Result<ScramClientFirst, SaslFailure> {
        if !matches!(self.state, ServerState::Start) {
            self.state = ServerState::Done;
            return Err(SaslFailure::MalformedRequest);
        }
        self.state = ServerState::Done;
        if self.rng_failed || !valid_nonce(&self.server_nonce) {
            return Err(SaslFailure::TemporaryAuthFailure);
        }
        let msg = std::str::from_utf8(msg).map_err(|_| SaslFailure::MalformedRequest)?;
        let mut parts = msg.splitn(3, ',');
        let (Some(flag), Some(authz), Some(bare)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(SaslFailure::MalformedRequest);
        };
        // gs2-cbind-flag: "p=" cb-name is refused (see above), anything else is a syntax error.
        if flag != "n" && flag != "y" {
            return Err(SaslFailure::MalformedRequest);
        }
        let authzid = match authz {
            "" => None,
            a => {
                let name = a.strip_prefix("a=").ok_or(SaslFailure::MalformedRequest)?;
                let name = unescape_saslname(name)?;
                if name.is_empty() {
                    return Err(SaslFailure::MalformedRequest);
                }
                Some(name)
            }
        };
        // client-first-message-bare; a leading "m=" (reserved-mext) fails the "n=" check.
        let mut fields = bare.split(',');
        let user = attr(&mut fields, 'n')?;
        let client_nonce = attr(&mut fields, 'r')?;
        check_extensions(fields)?;
        if !valid_nonce(client_nonce) {
            return Err(SaslFailure::MalformedRequest);
        }
        // RFC 5802 §5.1: unescape, then SASLprep; fail if that fails or gives an empty string.
        let username = saslprep(&unescape_saslname(user)?)?;
        if username.is_empty() {
            return Err(SaslFailure::MalformedRequest);
        }
        self.state = ServerState::GotFirst {
            gs2_header: joined(&[flag, ",", authz, ","]),
            client_first_bare: bare.to_owned(),
            client_nonce: client_nonce.to_owned(),
        };
        Ok(ScramClientFirst { username, authzid })
    }

    /// Build server-first-message (RFC 5802 §5.1, §7: `r=c-nonce s-nonce,s=salt,i=count`) from
    /// the account's credentials. For an unknown user, pass
    /// [`ScramCredentials::decoy`] so the exchange looks the same and ends in
    /// [`SaslFailure::NotAuthorized`]. Credentials for another hash simply never verify.
    ///
    /// Called out of order, it returns an empty message and ends the exchange (the following
    /// [`ScramServer::client_final`] fails with [`SaslFailure::MalformedRequest`]).
    pub fn server_first(&mut self, creds: &ScramCredentials) -> Vec<u8> {
        let ServerState::GotFirst { gs2_header, client_first_bare, client_nonce } =
            std::mem::replace(&mut self.state, ServerState::Done)
        else {
            return Vec::new();
        };
        let nonce = joined(&[&client_nonce, &self.server_nonce]);
        let mut server_first = String::with_capacity(nonce.len() + creds.salt.len() * 4 / 3 + 24);
        server_first.push_str("r=");
        server_first.push_str(&nonce);
        server_first.push_str(",s=");
        B64.encode_string(&creds.salt, &mut server_first);
        // Writing into a string whose capacity suffices cannot fail or reallocate.
        let _ = write!(server_first, ",i={}", creds.iterations);
        self.state = ServerState::SentFirst {
            gs2_header,
            auth_prefix: joined(&[&client_first_bare, ",", &server_first]),
            nonce,
            stored_key: creds.stored_key.clone(),
            server_key: creds.server_key.clone(),
        };
        server_first.into_bytes()
    }

    /// Verify client-final-message (RFC 5802 §5.1, §7):
    ///
    /// ```text
    /// "c=" base64(gs2-header) "," "r=" nonce [ "," extensions ] "," "p=" base64(ClientProof)
    /// ```
    ///
    /// On success returns server-final-message `v=base64(ServerSignature)`, to be sent in
    /// `<success/>` (RFC 6120 §6.4.6). Syntax errors (missing or misplaced fields, bad base64,
    /// non-UTF-8) give [`SaslFailure::MalformedRequest`]; channel-binding data that does not
    /// repeat the GS2 header, a nonce other than the one from server-first-message, or a wrong
    /// proof give [`SaslFailure::NotAuthorized`] (RFC 5802 §5.1 "channel-bindings-dont-match",
    /// "invalid-proof"). The exchange is over either way.
    pub fn client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, SaslFailure> {
        let ServerState::SentFirst { gs2_header, auth_prefix, nonce, stored_key, server_key } =
            std::mem::replace(&mut self.state, ServerState::Done)
        else {
            return Err(SaslFailure::MalformedRequest);
        };
        let msg = std::str::from_utf8(msg).map_err(|_| SaslFailure::MalformedRequest)?;
        // The proof is the last attribute; base64 has no ',' so the last ",p=" starts it.
        let (without_proof, proof) = msg.rsplit_once(",p=").ok_or(SaslFailure::MalformedRequest)?;
        let mut fields = without_proof.split(',');
        let cbind = attr(&mut fields, 'c')?;
        let r = attr(&mut fields, 'r')?;
        check_extensions(fields)?;
        let cbind = B64.decode(cbind).map_err(|_| SaslFailure::MalformedRequest)?;
        let proof = B64.decode(proof).map_err(|_| SaslFailure::MalformedRequest)?;
        if !constant_time_eq(&cbind, gs2_header.as_bytes()) || r != nonce {
            return Err(SaslFailure::NotAuthorized);
        }
        let h = self.hash;
        if proof.len() != h.output_len() || stored_key.len() != h.output_len() {
            return Err(SaslFailure::NotAuthorized);
        }
        let auth_message = joined(&[&auth_prefix, ",", without_proof]);
        let client_signature = h.hmac(&stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(&client_signature).map(|(p, s)| p ^ s).collect();
        if !constant_time_eq(&h.hash(&client_key), &stored_key) {
            return Err(SaslFailure::NotAuthorized);
        }
        let server_signature = h.hmac(&server_key, auth_message.as_bytes());
        let mut server_final = String::with_capacity(2 + server_signature.len() * 4 / 3 + 4);
        server_final.push_str("v=");
        B64.encode_string(server_signature, &mut server_final);
        Ok(server_final.into_bytes())
    }
}

/// Where a client-side exchange stands.
enum ClientState {
    /// client-first-message may be sent; waiting for server-first-message.
    Initial,
    /// client-final-message sent; waiting for server-final-message with this signature.
    SentFinal { server_signature: Vec<u8> },
    /// A step failed or came out of order.
    Failed,
}

/// The client side of SCRAM (RFC 5802 §5), for tests and the load generator: no channel
/// binding (GS2 flag `n`).
///
/// Computing SaltedPassword is the expensive part; a client that logs in often caches it
/// ([`ScramClient::salted_password`] after an exchange, [`ScramClient::with_salted_password`]
/// before the next), as RFC 5802 §3 notes clients may.
pub struct ScramClient {
    hash: ScramHash,
    /// SASLprep'd password.
    password: String,
    /// `n,,` or `n,a=authzid,`.
    gs2_header: String,
    client_first_bare: String,
    client_nonce: String,
    salted: Option<Vec<u8>>,
    state: ClientState,
}

/// Shows no password or keys.
impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient")
            .field("hash", &self.hash)
            .field("client_first_bare", &self.client_first_bare)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// A client for `username` / `password` with the given client nonce (printable ASCII
    /// without ','; RFC 5802 §7 — a server refuses anything else). Username and password are
    /// SASLprep'd where possible (RFC 5802 §5.1) and used as given otherwise.
    pub fn new(hash: ScramHash, username: &str, password: &str, client_nonce: &str) -> ScramClient {
        let username = saslprep(username).unwrap_or_else(|_| username.to_owned());
        ScramClient {
            hash,
            password: saslprep(password).unwrap_or_else(|_| password.to_owned()),
            gs2_header: "n,,".to_owned(),
            client_first_bare: format!("n={},r={client_nonce}", escape_saslname(&username)),
            client_nonce: client_nonce.to_owned(),
            salted: None,
            state: ClientState::Initial,
        }
    }

    /// Ask to act as `authzid` (GS2 header `a=`, RFC 5802 §5.1).
    pub fn with_authzid(mut self, authzid: &str) -> ScramClient {
        self.gs2_header = format!("n,a={},", escape_saslname(authzid));
        self
    }

    /// Reuse a SaltedPassword computed in an earlier exchange for the same account (same salt
    /// and iteration count). A stale one makes the proof wrong and the server answer
    /// not-authorized; one of the wrong length is ignored.
    pub fn with_salted_password(mut self, salted: Vec<u8>) -> ScramClient {
        self.salted = (salted.len() == self.hash.output_len()).then_some(salted);
        self
    }

    /// The SaltedPassword of this exchange (after [`ScramClient::handle_server_first`]), or the
    /// one given to [`ScramClient::with_salted_password`]; for caching.
    pub fn salted_password(&self) -> Option<&[u8]> {
        self.salted.as_deref()
    }

    /// client-first-message: `n,,n=user,r=nonce` (RFC 5802 §5.1).
    pub fn client_first(&self) -> Vec<u8> {
        format!("{}{}", self.gs2_header, self.client_first_bare).into_bytes()
    }

    /// Process server-first-message (`r=…,s=…,i=…`) and return client-final-message. The
    /// combined nonce must extend ours (RFC 5802 §5.1), the salt must be base64 and the iteration
    /// count a positive integer, else [`SaslFailure::MalformedRequest`]. Called twice, or after a
    /// failure: [`SaslFailure::MalformedRequest`].
    pub fn handle_server_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, SaslFailure> {
        if !matches!(self.state, ClientState::Initial) {
            self.state = ClientState::Failed;
            return Err(SaslFailure::MalformedRequest);
        }
        self.state = ClientState::Failed;
        let msg = std::str::from_utf8(msg).map_err(|_| SaslFailure::MalformedRequest)?;
        let mut fields = msg.split(',');
        let nonce = attr(&mut fields, 'r')?;
        let salt = attr(&mut fields, 's')?;
        let iterations = attr(&mut fields, 'i')?;
        check_extensions(fields)?;
        if !valid_nonce(nonce)
            || !nonce.starts_with(&self.client_nonce)
            || nonce.len() == self.client_nonce.len()
        {
            return Err(SaslFailure::MalformedRequest);
        }
        let salt = B64.decode(salt).map_err(|_| SaslFailure::MalformedRequest)?;
        let iterations: u32 = match iterations.parse() {
            Ok(i) if i > 0 && iterations.bytes().all(|b| b.is_ascii_digit()) => i,
            _ => return Err(SaslFailure::MalformedRequest),
        };
        let h = self.hash;
        let salted = match self.salted.take() {
            Some(s) => s,
            None => h.salted_password(&self.password, &salt, iterations),
        };
        let (client_key, stored_key, server_key) = h.keys(&salted);
        let without_proof = format!("c={},r={nonce}", B64.encode(&self.gs2_header));
        let auth_message = format!("{},{msg},{without_proof}", self.client_first_bare);
        let client_signature = h.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&client_signature).map(|(k, s)| k ^ s).collect();
        self.state =
            ClientState::SentFinal { server_signature: h.hmac(&server_key, auth_message.as_bytes()) };
        self.salted = Some(salted);
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Check server-final-message (RFC 5802 §5.1: `v=base64(ServerSignature)` or `e=error`):
    /// mutual authentication. `e=` or a wrong signature gives [`SaslFailure::NotAuthorized`]; bad
    /// syntax, or a call before [`ScramClient::handle_server_first`], gives
    /// [`SaslFailure::MalformedRequest`].
    pub fn verify_server_final(&self, msg: &[u8]) -> Result<(), SaslFailure> {
        let ClientState::SentFinal { server_signature } = &self.state else {
            return Err(SaslFailure::MalformedRequest);
        };
        let msg = std::str::from_utf8(msg).map_err(|_| SaslFailure::MalformedRequest)?;
        let mut fields = msg.split(',');
        let first = fields.next().unwrap_or_default();
        if first.starts_with("e=") {
            return Err(SaslFailure::NotAuthorized);
        }
        let v = first.strip_prefix("v=").ok_or(SaslFailure::MalformedRequest)?;
        check_extensions(fields)?;
        let v = B64.decode(v).map_err(|_| SaslFailure::MalformedRequest)?;
        if constant_time_eq(server_signature, &v) {
            Ok(())
        } else {
            Err(SaslFailure::NotAuthorized)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HASHES: [ScramHash; 2] = [ScramHash::Sha1, ScramHash::Sha256];

    /// One RFC example: (hash, client nonce, server nonce part, salt, messages...).
    struct Vector {
        hash: ScramHash,
        client_nonce: &'static str,
        server_nonce: &'static str,
        salt_b64: &'static str,
        client_first: &'static str,
        server_first: &'static str,
        client_final: &'static str,
        server_final: &'static str,
    }

    /// RFC 5802 §5: SCRAM-SHA-1, user "user", password "pencil".
    const RFC5802: Vector = Vector {
        hash: ScramHash::Sha1,
        client_nonce: "fyko+d2lbbFgONRv9qkxdawL",
        server_nonce: "3rfcNHYJY1ZVvWVs7j",
        salt_b64: "QSXCR+Q6sek8bf92",
        client_first: "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
        server_first: "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
        client_final: "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
        server_final: "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
    };

    /// RFC 7677 §3: SCRAM-SHA-256, user "user", password "pencil".
    const RFC7677: Vector = Vector {
        hash: ScramHash::Sha256,
        client_nonce: "rOprNGfwEbeRWgbNEkqO",
        server_nonce: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        salt_b64: "W22ZaJ0SNY7soEsUEjb6gQ==",
        client_first: "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
        server_first: "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        client_final: "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        server_final: "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
    };

    fn creds(v: &Vector) -> ScramCredentials {
        ScramCredentials::derive(v.hash, "pencil", &B64.decode(v.salt_b64).unwrap(), 4096).unwrap()
    }

    /// A server that has sent server-first for the vector.
    fn server_at_final(v: &Vector) -> ScramServer {
        let mut s = ScramServer::with_nonce(v.hash, v.server_nonce);
        let first = s.client_first(v.client_first.as_bytes()).unwrap();
        assert_eq!(first, ScramClientFirst { username: "user".into(), authzid: None });
        assert_eq!(String::from_utf8(s.server_first(&creds(v))).unwrap(), v.server_first);
        s
    }

    fn check_vector(v: &Vector) {
        // Server side: exact server-first, accepts the exact client-final, exact server-final.
        let mut s = server_at_final(v);
        let fin = s.client_final(v.client_final.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(fin).unwrap(), v.server_final);
        // Client side: the same messages.
        let mut c = ScramClient::new(v.hash, "user", "pencil", v.client_nonce);
        assert_eq!(String::from_utf8(c.client_first()).unwrap(), v.client_first);
        let cf = c.handle_server_first(v.server_first.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(cf).unwrap(), v.client_final);
        c.verify_server_final(v.server_final.as_bytes()).unwrap();
        // verify_password agrees.
        assert!(creds(v).verify_password("pencil"));
        assert!(!creds(v).verify_password("pencil2"));
    }

    #[test]
    fn rfc5802_sha1_example() {
        check_vector(&RFC5802);
    }

    #[test]
    fn rfc7677_sha256_example() {
        check_vector(&RFC7677);
    }

    #[test]
    fn wrong_proof_is_not_authorized() {
        for v in [&RFC5802, &RFC7677] {
            let (prefix, proof) = v.client_final.rsplit_once(",p=").unwrap();
            let mut bytes = B64.decode(proof).unwrap();
            bytes[0] ^= 1;
            let flipped = format!("{prefix},p={}", B64.encode(&bytes));
            assert_eq!(server_at_final(v).client_final(flipped.as_bytes()), Err(SaslFailure::NotAuthorized));
            // A proof of the wrong length.
            let short = format!("{prefix},p={}", B64.encode(&bytes[1..]));
            assert_eq!(server_at_final(v).client_final(short.as_bytes()), Err(SaslFailure::NotAuthorized));
            // Right proof, wrong password stored.
            let mut s = ScramServer::with_nonce(v.hash, v.server_nonce);
            s.client_first(v.client_first.as_bytes()).unwrap();
            let salt = B64.decode(v.salt_b64).unwrap();
            s.server_first(&ScramCredentials::derive(v.hash, "pencil!", &salt, 4096).unwrap());
            assert_eq!(s.client_final(v.client_final.as_bytes()), Err(SaslFailure::NotAuthorized));
        }
    }

    #[test]
    fn credentials_for_another_hash_never_verify() {
        let mut s = ScramServer::with_nonce(ScramHash::Sha1, RFC5802.server_nonce);
        s.client_first(RFC5802.client_first.as_bytes()).unwrap();
        let salt = B64.decode(RFC5802.salt_b64).unwrap();
        s.server_first(&ScramCredentials::derive(ScramHash::Sha256, "pencil", &salt, 4096).unwrap());
        assert_eq!(s.client_final(RFC5802.client_final.as_bytes()), Err(SaslFailure::NotAuthorized));
    }

    /// A full exchange; returns the username the server saw.
    fn exchange(
        hash: ScramHash,
        creds: &ScramCredentials,
        mut c: ScramClient,
    ) -> Result<ScramClientFirst, SaslFailure> {
        let mut s = ScramServer::new(hash);
        let first = s.client_first(&c.client_first())?;
        let cf = c.handle_server_first(&s.server_first(creds))?;
        let fin = s.client_final(&cf)?;
        c.verify_server_final(&fin)?;
        Ok(first)
    }

    #[test]
    fn client_server_round_trips() {
        for h in HASHES {
            let creds = ScramCredentials::generate(h, "correct horse", 4096).unwrap();
            for user in ["alice", "we,ird=name", "=2C", ",,==", "j\u{00FC}rgen"] {
                let c = ScramClient::new(h, user, "correct horse", "abcdefghijkl");
                let first = exchange(h, &creds, c).unwrap();
                assert_eq!(first.username, user);
                assert_eq!(first.authzid, None);
            }
            let c = ScramClient::new(h, "alice", "wrong horse", "abcdefghijkl");
            assert_eq!(exchange(h, &creds, c), Err(SaslFailure::NotAuthorized));
        }
    }

    #[test]
    fn authzid_round_trip() {
        let creds = ScramCredentials::generate(ScramHash::Sha256, "pw", 4096).unwrap();
        let c = ScramClient::new(ScramHash::Sha256, "alice", "pw", "nonce").with_authzid("a,b=c@example.com");
        assert_eq!(String::from_utf8(c.client_first()).unwrap(), "n,a=a=2Cb=3Dc@example.com,n=alice,r=nonce");
        let first = exchange(ScramHash::Sha256, &creds, c).unwrap();
        assert_eq!(first.authzid.as_deref(), Some("a,b=c@example.com"));
    }

    #[test]
    fn gs2_flag_y_is_accepted_and_bound() {
        // 'y': the client supports channel binding but believes the server does not (RFC 5802 §6);
        // the client-final must then carry c=base64("y,,") = "eSws".
        let creds = ScramCredentials::generate(ScramHash::Sha1, "pw", 4096).unwrap();
        let mut c = ScramClient::new(ScramHash::Sha1, "bob", "pw", "ynonce");
        c.gs2_header = "y,,".into();
        assert!(exchange(ScramHash::Sha1, &creds, c).is_ok());
        // The same client-final with c=biws ("n,,") does not match the 'y' header.
        let mut c = ScramClient::new(ScramHash::Sha1, "bob", "pw", "ynonce");
        let mut s = ScramServer::with_nonce(ScramHash::Sha1, "srv");
        s.client_first(b"y,,n=bob,r=ynonce").unwrap();
        let cf = c.handle_server_first(&s.server_first(&creds)).unwrap();
        assert!(cf.starts_with(b"c=biws,"));
        assert_eq!(s.client_final(&cf), Err(SaslFailure::NotAuthorized));
    }

    #[test]
    fn escaped_usernames() {
        let parse = |m: &str| ScramServer::with_nonce(ScramHash::Sha256, "s").client_first(m.as_bytes());
        assert_eq!(parse("n,,n=a=2Cb=3Dc,r=x").unwrap().username, "a,b=c");
        assert_eq!(parse("n,,n==3D=3D,r=x").unwrap().username, "==");
        // SASLprep applies after unescaping (RFC 4013 §3 example: soft hyphen maps to nothing).
        assert_eq!(parse("n,,n=I\u{00AD}X,r=x").unwrap().username, "IX");
        for bad in ["n,,n=a=2c,r=x", "n,,n=a=,r=x", "n,,n=a=2,r=x", "n,,n=a=41,r=x", "n,,n==,r=x"] {
            assert_eq!(parse(bad), Err(SaslFailure::MalformedRequest), "{bad}");
        }
    }

    #[test]
    fn client_first_fields() {
        let parse = |m: &[u8]| ScramServer::with_nonce(ScramHash::Sha256, "s").client_first(m);
        let ok = parse(b"n,a=admin@example.com,n=alice,r=abc,x=ext").unwrap();
        assert_eq!(ok.authzid.as_deref(), Some("admin@example.com"));
        assert_eq!(ok.username, "alice");
        for bad in [
            &b""[..],
            b"n",
            b"n,",
            b"n,,",
            b"n,,n=alice",
            b"n,,r=abc",
            b"n,,r=abc,n=alice",
            b"n,,n=alice,r=",
            b"n,,n=,r=abc",
            b"n,,n=alice,r=a b",
            b"n,,n=alice,r=abc\x7f",
            b"n,,n=alice,r=abc,",
            b"n,,n=alice,r=abc,bogus",
            b"n,,n=alice,r=abc,m=late",
            b"n,,m=ext,n=alice,r=abc",
            b"p=tls-unique,,n=alice,r=abc",
            b"p=tls-exporter,,n=alice,r=abc",
            b"q,,n=alice,r=abc",
            b"N,,n=alice,r=abc",
            b"n,b=x,n=alice,r=abc",
            b"n,a=,n=alice,r=abc",
            b"n,a=x=,n=alice,r=abc",
            b"n,,n=al\x07ice,r=abc",
            b"n,,n=al\xffice,r=abc",
            b"F,n,,n=alice,r=abc",
        ] {
            assert_eq!(parse(bad), Err(SaslFailure::MalformedRequest), "{}", String::from_utf8_lossy(bad));
        }
    }

    /// A server after client-first "n,,n=a,r=cli" and server-first with nonce part "srv".
    fn server_after_first(creds: &ScramCredentials) -> ScramServer {
        let mut s = ScramServer::with_nonce(creds.hash, "srv");
        s.client_first(b"n,,n=a,r=cli").unwrap();
        assert_eq!(
            s.server_first(creds),
            format!("r=clisrv,s={},i={}", B64.encode(&creds.salt), creds.iterations).into_bytes()
        );
        s
    }

    #[test]
    fn malformed_client_final() {
        let creds = ScramCredentials::derive(ScramHash::Sha1, "pw", b"salt", 4096).unwrap();
        let proof = B64.encode([0u8; 20]);
        let cases: Vec<(String, SaslFailure)> = vec![
            (String::new(), SaslFailure::MalformedRequest),
            ("c=biws,r=clisrv".into(), SaslFailure::MalformedRequest),
            (format!("r=clisrv,p={proof}"), SaslFailure::MalformedRequest),
            (format!("c=biws,p={proof}"), SaslFailure::MalformedRequest),
            (format!("r=clisrv,c=biws,p={proof}"), SaslFailure::MalformedRequest),
            (format!("c=biws,r=clisrv,bogus,p={proof}"), SaslFailure::MalformedRequest),
            (format!("c=biws,r=clisrv,m=x,p={proof}"), SaslFailure::MalformedRequest),
            ("c=biws,r=clisrv,p=!!notbase64".into(), SaslFailure::MalformedRequest),
            ("c=biws,r=clisrv,p=AAA".into(), SaslFailure::MalformedRequest),
            (format!("c=bi*s,r=clisrv,p={proof}"), SaslFailure::MalformedRequest),
            (format!("c=biws,r=clisrv,p={proof},x=1"), SaslFailure::MalformedRequest),
            // Wrong nonce, wrong channel binding, wrong proof.
            (format!("c=biws,r=clisrvX,p={proof}"), SaslFailure::NotAuthorized),
            (format!("c=biws,r=cli,p={proof}"), SaslFailure::NotAuthorized),
            (format!("c=eSws,r=clisrv,p={proof}"), SaslFailure::NotAuthorized),
            (format!("c=,r=clisrv,p={proof}"), SaslFailure::NotAuthorized),
            (format!("c=biws,r=clisrv,p={proof}"), SaslFailure::NotAuthorized),
            (format!("c=biws,r=clisrv,x=ext,p={proof}"), SaslFailure::NotAuthorized),
            ("c=biws,r=clisrv,p=".into(), SaslFailure::NotAuthorized),
        ];
        for (msg, expected) in cases {
            assert_eq!(server_after_first(&creds).client_final(msg.as_bytes()), Err(expected), "{msg}");
        }
        assert_eq!(
            server_after_first(&creds).client_final(b"c=biws,r=clisrv\xff,p=AAAA"),
            Err(SaslFailure::MalformedRequest)
        );
    }

    #[test]
    fn server_steps_out_of_order() {
        let creds = ScramCredentials::derive(ScramHash::Sha256, "pw", b"salt", 4096).unwrap();
        // client_final first.
        let mut s = ScramServer::new(ScramHash::Sha256);
        assert_eq!(s.client_final(b"c=biws,r=x,p=AAAA"), Err(SaslFailure::MalformedRequest));
        assert_eq!(s.client_first(b"n,,n=a,r=cli"), Err(SaslFailure::MalformedRequest));
        // server_first first: empty, and the exchange is over.
        let mut s = ScramServer::new(ScramHash::Sha256);
        assert!(s.server_first(&creds).is_empty());
        assert_eq!(s.client_first(b"n,,n=a,r=cli"), Err(SaslFailure::MalformedRequest));
        // client_first twice.
        let mut s = ScramServer::new(ScramHash::Sha256);
        s.client_first(b"n,,n=a,r=cli").unwrap();
        assert_eq!(s.client_first(b"n,,n=a,r=cli"), Err(SaslFailure::MalformedRequest));
        assert!(s.server_first(&creds).is_empty());
        // client_final before server_first.
        let mut s = ScramServer::new(ScramHash::Sha256);
        s.client_first(b"n,,n=a,r=cli").unwrap();
        assert_eq!(s.client_final(b"c=biws,r=x,p=AAAA"), Err(SaslFailure::MalformedRequest));
        // server_first twice.
        let mut s = server_after_first(&creds);
        assert!(s.server_first(&creds).is_empty());
        assert_eq!(s.client_final(b"c=biws,r=clisrv,p=AAAA"), Err(SaslFailure::MalformedRequest));
        // client_final twice, even after success.
        let mut s = server_at_final(&RFC7677);
        s.client_final(RFC7677.client_final.as_bytes()).unwrap();
        assert_eq!(s.client_final(RFC7677.client_final.as_bytes()), Err(SaslFailure::MalformedRequest));
        // A failed client_first ends the exchange too.
        let mut s = ScramServer::new(ScramHash::Sha256);
        assert!(s.client_first(b"garbage").is_err());
        assert_eq!(s.client_first(b"n,,n=a,r=cli"), Err(SaslFailure::MalformedRequest));
    }

    #[test]
    fn invalid_configured_nonce_is_refused() {
        for nonce in ["", "a,b", "sp ace"] {
            let mut s = ScramServer::with_nonce(ScramHash::Sha1, nonce);
            assert_eq!(s.client_first(b"n,,n=a,r=cli"), Err(SaslFailure::TemporaryAuthFailure));
        }
    }

    #[test]
    fn random_server_nonces() {
        let a = ScramServer::new(ScramHash::Sha1);
        let b = ScramServer::new(ScramHash::Sha1);
        assert_ne!(a.server_nonce, b.server_nonce);
        assert_eq!(a.server_nonce.len(), 32);
        assert!(valid_nonce(&a.server_nonce));
        assert!(!a.rng_failed);
        assert_eq!(a.hash(), ScramHash::Sha1);
        assert!(!format!("{a:?}").is_empty());
    }

    #[test]
    fn client_rejects_bad_server_first() {
        let bad: [&[u8]; 14] = [
            b"",
            b"r=abcSRV,s=c2FsdA==",
            b"r=abcSRV,i=4096",
            b"s=c2FsdA==,r=abcSRV,i=4096",
            b"r=xyzSRV,s=c2FsdA==,i=4096",
            b"r=abc,s=c2FsdA==,i=4096",
            b"r=abcS V,s=c2FsdA==,i=4096",
            b"r=abcSRV,s=!!,i=4096",
            b"r=abcSRV,s=c2FsdA==,i=0",
            b"r=abcSRV,s=c2FsdA==,i=-1",
            b"r=abcSRV,s=c2FsdA==,i=+5",
            b"r=abcSRV,s=c2FsdA==,i=99999999999",
            b"m=x,r=abcSRV,s=c2FsdA==,i=4096",
            b"r=abcSRV,s=c2FsdA==,i=4096,junk",
        ];
        for msg in bad {
            let mut c = ScramClient::new(ScramHash::Sha1, "u", "pw", "abc");
            assert_eq!(c.handle_server_first(msg), Err(SaslFailure::MalformedRequest), "{msg:?}");
            // After a failure the exchange is over.
            assert_eq!(c.handle_server_first(b"r=abcSRV,s=c2FsdA==,i=1"), Err(SaslFailure::MalformedRequest));
        }
        // Extensions after i= are ignored.
        let mut c = ScramClient::new(ScramHash::Sha1, "u", "pw", "abc");
        assert!(c.handle_server_first(b"r=abcSRV,s=c2FsdA==,i=1,x=y").is_ok());
    }

    #[test]
    fn client_steps_out_of_order_and_bad_server_final() {
        let mut c = ScramClient::new(RFC5802.hash, "user", "pencil", RFC5802.client_nonce);
        assert_eq!(
            c.verify_server_final(RFC5802.server_final.as_bytes()),
            Err(SaslFailure::MalformedRequest)
        );
        c.handle_server_first(RFC5802.server_first.as_bytes()).unwrap();
        assert_eq!(
            c.handle_server_first(RFC5802.server_first.as_bytes()),
            Err(SaslFailure::MalformedRequest)
        );
        let mut c = ScramClient::new(RFC5802.hash, "user", "pencil", RFC5802.client_nonce);
        c.handle_server_first(RFC5802.server_first.as_bytes()).unwrap();
        for (msg, expected) in [
            (&b"e=invalid-proof"[..], SaslFailure::NotAuthorized),
            (b"v=AAAA", SaslFailure::NotAuthorized),
            (b"v=", SaslFailure::NotAuthorized),
            (b"v=!!", SaslFailure::MalformedRequest),
            (b"", SaslFailure::MalformedRequest),
            (b"x=1", SaslFailure::MalformedRequest),
            (b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=,junk", SaslFailure::MalformedRequest),
            (b"\xff", SaslFailure::MalformedRequest),
        ] {
            assert_eq!(c.verify_server_final(msg), Err(expected), "{msg:?}");
        }
        c.verify_server_final(RFC5802.server_final.as_bytes()).unwrap();
        c.verify_server_final(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=,x=ext").unwrap();
    }

    #[test]
    fn cached_salted_password() {
        let salt = B64.decode(RFC7677.salt_b64).unwrap();
        let mut c = ScramClient::new(ScramHash::Sha256, "user", "pencil", RFC7677.client_nonce);
        assert_eq!(c.salted_password(), None);
        c.handle_server_first(RFC7677.server_first.as_bytes()).unwrap();
        let salted = c.salted_password().unwrap().to_vec();
        assert_eq!(salted, ScramHash::Sha256.salted_password("pencil", &salt, 4096));
        // A client that only has the cached value (not the password) produces the same proof.
        let mut c2 = ScramClient::new(ScramHash::Sha256, "user", "not the password", RFC7677.client_nonce)
            .with_salted_password(salted.clone());
        assert_eq!(c2.salted_password(), Some(&salted[..]));
        let cf = c2.handle_server_first(RFC7677.server_first.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(cf).unwrap(), RFC7677.client_final);
        // A cache of the wrong length is ignored.
        let c3 =
            ScramClient::new(ScramHash::Sha256, "user", "pencil", "n").with_salted_password(vec![1, 2, 3]);
        assert_eq!(c3.salted_password(), None);
        assert!(!format!("{c3:?}").contains("pencil"));
    }

    #[test]
    fn decoys() {
        for h in HASHES {
            let d = ScramCredentials::decoy(h, "ghost", b"secret");
            let again = ScramCredentials::decoy(h, "ghost", b"secret");
            assert_eq!(d.salt, again.salt, "stable salt");
            assert_ne!(d.stored_key, again.stored_key, "random keys");
            assert_eq!(d.salt.len(), 16);
            assert_eq!(d.iterations, 4096);
            assert_eq!(d.stored_key.len(), h.output_len());
            assert_ne!(d.salt, ScramCredentials::decoy(h, "ghost2", b"secret").salt);
            assert_ne!(d.salt, ScramCredentials::decoy(h, "ghost", b"other").salt);
            assert!(!d.verify_password("anything"));
            let c = ScramClient::new(h, "ghost", "anything", "nonce123");
            assert_eq!(exchange(h, &d, c), Err(SaslFailure::NotAuthorized));
            assert_eq!(
                ScramCredentials::decoy_with_iterations(h, "ghost", b"secret", 10000).iterations,
                10000
            );
            assert_eq!(ScramCredentials::decoy_with_iterations(h, "ghost", b"secret", 0).iterations, 4096);
        }
    }

    #[test]
    fn derive_and_verify_password() {
        for h in HASHES {
            let c = ScramCredentials::generate(h, "correct horse", 4096).unwrap();
            assert_eq!(c.salt.len(), 16);
            assert_eq!(c.hash, h);
            assert_ne!(c.salt, ScramCredentials::generate(h, "correct horse", 4096).unwrap().salt);
            assert!(c.verify_password("correct horse"));
            assert!(!c.verify_password("correct horse "));
            assert!(!c.verify_password(""));
            assert!(!c.verify_password("bad\u{0007}"));
            // SASLprep (RFC 4013 §3): "I<SOFT HYPHEN>X" and "IX" are the same password.
            let c = ScramCredentials::derive(h, "IX", b"salt", 4096).unwrap();
            assert!(c.verify_password("I\u{00AD}X"));
            assert!(c.verify_password("\u{2168}"));
            assert_eq!(c, ScramCredentials::derive(h, "I\u{00AD}X", b"salt", 4096).unwrap());
        }
        assert_eq!(
            ScramCredentials::derive(ScramHash::Sha1, "", b"s", 4096),
            Err(SaslFailure::MalformedRequest)
        );
        assert_eq!(
            ScramCredentials::derive(ScramHash::Sha1, "pw", b"s", 0),
            Err(SaslFailure::MalformedRequest)
        );
        assert_eq!(
            ScramCredentials::derive(ScramHash::Sha1, "p\u{0007}w", b"s", 1),
            Err(SaslFailure::MalformedRequest)
        );
        let mut zero = ScramCredentials::derive(ScramHash::Sha1, "pw", b"s", 1).unwrap();
        zero.iterations = 0;
        assert!(!zero.verify_password("pw"));
    }

    #[test]
    fn mechanism_names() {
        for h in HASHES {
            assert_eq!(ScramHash::from_mechanism(h.mechanism()), Some(h));
        }
        assert_eq!(ScramHash::Sha1.mechanism(), "SCRAM-SHA-1");
        assert_eq!(ScramHash::Sha256.mechanism(), "SCRAM-SHA-256");
        for other in ["PLAIN", "SCRAM-SHA-256-PLUS", "scram-sha-1", "SCRAM-SHA-512", ""] {
            assert_eq!(ScramHash::from_mechanism(other), None);
        }
    }

    /// Bytes that are often close to valid SCRAM messages.
    fn scramish() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            "[nyp]?,(a=[a-z=2CD]{0,6})?,(m=x,)?n=[a-z=,2CD]{0,8},r=[!-~]{0,10}(,[a-z]=[a-z]{0,3}){0,2}"
                .prop_map(String::into_bytes),
            "c=(biws|eSws|[A-Za-z0-9+/=]{0,8}),r=(clisrv|[!-~]{0,8})(,[a-z]=[a-z]{0,3})?,p=[A-Za-z0-9+/=,]{0,40}"
                .prop_map(String::into_bytes),
        ]
    }

    proptest! {
        #[test]
        fn server_never_panics(first in scramish(), last in scramish()) {
            let mut s = ScramServer::with_nonce(ScramHash::Sha256, "srv");
            if s.client_first(&first).is_ok() {
                s.server_first(&ScramCredentials::decoy_with_iterations(ScramHash::Sha256, "x", b"k", 1));
            }
            prop_assert!(s.client_final(&last).is_err());
        }

        #[test]
        fn client_final_never_panics(last in scramish()) {
            let creds = ScramCredentials::decoy_with_iterations(ScramHash::Sha1, "a", b"k", 1);
            let mut s = server_after_first(&creds);
            prop_assert!(s.client_final(&last).is_err());
        }

        #[test]
        fn client_never_panics(first in scramish(), last in scramish()) {
            let mut c = ScramClient::new(ScramHash::Sha1, "u", "pw", "cli");
            let _ = c.handle_server_first(&first);
            let _ = c.verify_server_final(&last);
        }

        /// SHA-1 from the `sha1` crate (with the CPU's SHA extensions) agrees with ring's
        /// portable SHA-1 on H, HMAC (short and long keys) and Hi.
        #[test]
        fn sha1_agrees_with_ring(
            key in prop::collection::vec(any::<u8>(), 0..150),
            data in prop::collection::vec(any::<u8>(), 0..300),
            iterations in 1u32..40,
        ) {
            let ring_sha1 = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &data);
            prop_assert_eq!(ScramHash::Sha1.hash(&data), ring_sha1.as_ref().to_vec());
            let ring_key = ring_hmac::Key::new(ring_hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &key);
            prop_assert_eq!(ScramHash::Sha1.hmac(&key, &data), ring_hmac::sign(&ring_key, &data).as_ref().to_vec());
            let password = String::from_utf8_lossy(&key);
            let mut ring_hi = [0u8; 20];
            pbkdf2::derive(
                pbkdf2::PBKDF2_HMAC_SHA1,
                NonZeroU32::new(iterations).unwrap(),
                &data,
                password.as_bytes(),
                &mut ring_hi,
            );
            prop_assert_eq!(ScramHash::Sha1.salted_password(&password, &data, iterations), ring_hi.to_vec());
        }

        #[test]
        fn any_username_round_trips(user in "[a-zA-Z0-9,=@. ]{1,16}", pw in "[!-~]{1,16}") {
            prop_assume!(!user.trim().is_empty());
            let creds = ScramCredentials::derive(ScramHash::Sha256, &pw, b"salt", 1).unwrap();
            let c = ScramClient::new(ScramHash::Sha256, &user, &pw, "cnonce");
            prop_assert_eq!(exchange(ScramHash::Sha256, &creds, c).unwrap().username, user);
        }
    }
}
