//! SCRAM (RFC 5802) with SHA-1 and SHA-256 (RFC 7677), without channel binding.

use super::{constant_time_eq, saslprep, SaslFailure};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::{digest, hmac, pbkdf2};
use std::num::NonZeroU32;

/// The hash a SCRAM mechanism uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ScramHash {
    /// SCRAM-SHA-1
    Sha1,
    /// SCRAM-SHA-256
    Sha256,
}

impl ScramHash {
    /// The SASL mechanism name.
    pub fn mechanism(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SCRAM-SHA-1",
            ScramHash::Sha256 => "SCRAM-SHA-256",
        }
    }

    /// The hash for a mechanism name.
    pub fn from_mechanism(name: &str) -> Option<ScramHash> {
        match name {
            "SCRAM-SHA-1" => Some(ScramHash::Sha1),
            "SCRAM-SHA-256" => Some(ScramHash::Sha256),
            _ => None,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            ScramHash::Sha1 => pbkdf2::PBKDF2_HMAC_SHA1,
            ScramHash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
        }
    }

    fn hmac_alg(self) -> hmac::Algorithm {
        match self {
            ScramHash::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            ScramHash::Sha256 => hmac::HMAC_SHA256,
        }
    }

    fn len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.hmac_alg(), key), data).as_ref().to_vec()
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        let alg = match self {
            ScramHash::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            ScramHash::Sha256 => &digest::SHA256,
        };
        digest::digest(alg, data).as_ref().to_vec()
    }

    /// Hi() of RFC 5802 §2.2: PBKDF2 with HMAC.
    fn salted_password(self, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.len()];
        let iterations = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
        pbkdf2::derive(self.pbkdf2(), iterations, salt, password.as_bytes(), &mut out);
        out
    }
}

/// What the server stores for an account: never the password (RFC 5802 §2.2, §3).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScramCredentials {
    /// Which mechanism these are for.
    pub hash: ScramHash,
    /// The salt.
    pub salt: Vec<u8>,
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// H(ClientKey).
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: Vec<u8>,
}

fn keys_from_salted(hash: ScramHash, salted: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let client_key = hash.hmac(salted, b"Client Key");
    (hash.hash(&client_key), hash.hmac(salted, b"Server Key"))
}

fn random<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut b = [0u8; N];
    // A failing system RNG leaves zeros; salts then only lose uniqueness, not secrecy of keys.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b
}

impl ScramCredentials {
    /// Derive from a password (SASLprep'd first) with this salt and iteration count.
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
        let (stored_key, server_key) = keys_from_salted(hash, &salted);
        Ok(ScramCredentials { hash, salt: salt.to_vec(), iterations, stored_key, server_key })
    }

    /// Derive with a fresh random 16-byte salt.
    pub fn generate(
        hash: ScramHash,
        password: &str,
        iterations: u32,
    ) -> Result<ScramCredentials, SaslFailure> {
        ScramCredentials::derive(hash, password, &random::<16>(), iterations)
    }

    /// Check a clear password (SASL PLAIN) against these credentials, in constant time.
    pub fn verify_password(&self, password: &str) -> bool {
        let Ok(password) = saslprep(password) else { return false };
        let salted = self.hash.salted_password(&password, &self.salt, self.iterations);
        let (stored_key, _) = keys_from_salted(self.hash, &salted);
        constant_time_eq(&stored_key, &self.stored_key)
    }

    /// Credentials for a user that does not exist: the salt is derived from the username and a
    /// server secret (stable across attempts, like a real one), the keys verify nothing. Running
    /// the exchange with these makes unknown users indistinguishable from wrong passwords.
    pub fn decoy(hash: ScramHash, username: &str, server_secret: &[u8]) -> ScramCredentials {
        let salt = hash.hmac(server_secret, username.as_bytes())[..16].to_vec();
        ScramCredentials {
            hash,
            salt,
            iterations: 4096,
            stored_key: random::<32>()[..hash.len()].to_vec(),
            server_key: random::<32>()[..hash.len()].to_vec(),
        }
    }
}

/// The parsed client-first-message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramClientFirst {
    /// The username, unescaped and SASLprep'd.
    pub username: String,
    /// The authorization identity from the GS2 header, if any.
    pub authzid: Option<String>,
}

/// Where a server-side exchange stands.
#[derive(Debug)]
enum ServerState {
    Start,
    /// client-first parsed.
    GotFirst {
        gs2_header: String,
        client_first_bare: String,
        client_nonce: String,
    },
    /// server-first sent.
    SentFirst {
        gs2_header: String,
        auth_prefix: String,
        nonce: String,
        stored_key: Vec<u8>,
        server_key: Vec<u8>,
    },
    Done,
}

/// One SCRAM exchange, server side. Messages are the decoded SASL payloads.
#[derive(Debug)]
pub struct ScramServer {
    hash: ScramHash,
    server_nonce: String,
    state: ServerState,
}

/// RFC 5802 §5.1: saslname with `=2C` and `=3D` escapes.
fn unescape_saslname(s: &str) -> Result<String, SaslFailure> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(SaslFailure::MalformedRequest),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

fn escape_saslname(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

/// A printable nonce without ',' (RFC 5802 §5.1).
fn valid_nonce(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

impl ScramServer {
    /// A new exchange with a random server nonce.
    pub fn new(hash: ScramHash) -> ScramServer {
        ScramServer::with_nonce(hash, &B64.encode(random::<18>()))
    }

    /// A new exchange with a given server nonce part (test vectors).
    pub fn with_nonce(hash: ScramHash, server_nonce_part: &str) -> ScramServer {
        ScramServer { hash, server_nonce: server_nonce_part.to_owned(), state: ServerState::Start }
    }

    /// The mechanism's hash.
    pub fn hash(&self) -> ScramHash {
        self.hash
    }

    /// Parse client-first-message. Channel binding is not offered, so a `p=` flag is refused.
    pub fn client_first(&mut self, msg: &[u8]) -> Result<ScramClientFirst, SaslFailure> {
        if !matches!(self.state, ServerState::Start) {
            return Err(SaslFailure::MalformedRequest);
        }
        let msg = std::str::from_utf8(msg).map_err(|_| SaslFailure::MalformedRequest)?;
        let mut parts = msg.splitn(3, ',');
        let (Some(flag), Some(authz), Some(bare)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(SaslFailure::MalformedRequest);
        };
        if !matches!(flag, "n" | "y") {
            return Err(SaslFailure::MalformedRequest);
        }
        let authzid = match authz {
            "" => None,
            a => Some(unescape_saslname(a.strip_prefix("a=").ok_or(SaslFailure::MalformedRequest)?)?),
        };
        let mut fields = bare.split(',');
        let user = fields.next().and_then(|f| f.strip_prefix("n=")).ok_or(SaslFailure::MalformedRequest)?;
        let nonce = fields.next().and_then(|f| f.strip_prefix("r=")).ok_or(SaslFailure::MalformedRequest)?;
        if !valid_nonce(nonce) {
            return Err(SaslFailure::MalformedRequest);
        }
        let username = saslprep(&unescape_saslname(user)?)?;
        if username.is_empty() {
            return Err(SaslFailure::MalformedRequest);
        }
        self.state = ServerState::GotFirst {
            gs2_header: format!("{flag},{authz},"),
            client_first_bare: bare.to_owned(),
            client_nonce: nonce.to_owned(),
        };
        Ok(ScramClientFirst { username, authzid })
    }

    /// server-first-message for these credentials. Empty if called out of order.
    pub fn server_first(&mut self, creds: &ScramCredentials) -> Vec<u8> {
        let ServerState::GotFirst { gs2_header, client_first_bare, client_nonce } =
            std::mem::replace(&mut self.state, ServerState::Done)
        else {
            return Vec::new();
        };
        let nonce = format!("{client_nonce}{}", self.server_nonce);
        let server_first = format!("r={nonce},s={},i={}", B64.encode(&creds.salt), creds.iterations);
        self.state = ServerState::SentFirst {
            gs2_header,
            auth_prefix: format!("{client_first_bare},{server_first}"),
            nonce,
            stored_key: creds.stored_key.clone(),
            server_key: creds.server_key.clone(),
        };
        server_first.into_bytes()
    }

    /// Verify client-final-message; on success the server-final-message (`v=…`).
    pub fn client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, SaslFailure> {
        let ServerState::SentFirst { gs2_header, auth_prefix, nonce, stored_key, server_key } =
            std::mem::replace(&mut self.state, ServerState::Done)
        else {
            return Err(SaslFailure::MalformedRequest);
        };
        let msg = std::str::from_utf8(msg).map_err(|_| SaslFailure::MalformedRequest)?;
        let (without_proof, proof) = msg.rsplit_once(",p=").ok_or(SaslFailure::MalformedRequest)?;
        let mut fields = without_proof.split(',');
        let cb = fields.next().and_then(|f| f.strip_prefix("c=")).ok_or(SaslFailure::MalformedRequest)?;
        let r = fields.next().and_then(|f| f.strip_prefix("r=")).ok_or(SaslFailure::MalformedRequest)?;
        let cb = B64.decode(cb).map_err(|_| SaslFailure::MalformedRequest)?;
        if cb != gs2_header.as_bytes() || r != nonce {
            return Err(SaslFailure::NotAuthorized);
        }
        let proof = B64.decode(proof).map_err(|_| SaslFailure::MalformedRequest)?;
        let h = self.hash;
        if proof.len() != h.len() {
            return Err(SaslFailure::NotAuthorized);
        }
        let auth_message = format!("{auth_prefix},{without_proof}");
        let client_signature = h.hmac(&stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(&client_signature).map(|(a, b)| a ^ b).collect();
        if !constant_time_eq(&h.hash(&client_key), &stored_key) {
            return Err(SaslFailure::NotAuthorized);
        }
        let server_signature = h.hmac(&server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

/// The client side of SCRAM, for tests and the load generator.
#[derive(Debug)]
pub struct ScramClient {
    hash: ScramHash,
    password: String,
    client_first_bare: String,
    client_nonce: String,
    salted: Option<Vec<u8>>,
    expected_server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    /// A client for `username` / `password` with the given nonce.
    pub fn new(hash: ScramHash, username: &str, password: &str, client_nonce: &str) -> ScramClient {
        ScramClient {
            hash,
            password: saslprep(password).unwrap_or_else(|_| password.to_owned()),
            client_first_bare: format!("n={},r={client_nonce}", escape_saslname(username)),
            client_nonce: client_nonce.to_owned(),
            salted: None,
            expected_server_signature: None,
        }
    }

    /// Reuse a salted password computed earlier (real clients cache it; so does a load generator).
    pub fn with_salted_password(mut self, salted: Vec<u8>) -> ScramClient {
        self.salted = Some(salted);
        self
    }

    /// The salted password of the last exchange, for caching.
    pub fn salted_password(&self) -> Option<&[u8]> {
        self.salted.as_deref()
    }

    /// client-first-message (no channel binding, no authzid).
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// Process server-first-message; returns client-final-message.
    pub fn handle_server_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, SaslFailure> {
        let msg = std::str::from_utf8(msg).map_err(|_| SaslFailure::MalformedRequest)?;
        let mut fields = msg.split(',');
        let nonce = fields.next().and_then(|f| f.strip_prefix("r=")).ok_or(SaslFailure::MalformedRequest)?;
        let salt = fields.next().and_then(|f| f.strip_prefix("s=")).ok_or(SaslFailure::MalformedRequest)?;
        let iters = fields.next().and_then(|f| f.strip_prefix("i=")).ok_or(SaslFailure::MalformedRequest)?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err(SaslFailure::MalformedRequest);
        }
        let salt = B64.decode(salt).map_err(|_| SaslFailure::MalformedRequest)?;
        let iters: u32 = iters.parse().map_err(|_| SaslFailure::MalformedRequest)?;
        let h = self.hash;
        let salted = match self.salted.take() {
            Some(s) => s,
            None => h.salted_password(&self.password, &salt, iters),
        };
        let without_proof = format!("c={},r={nonce}", B64.encode("n,,"));
        let auth_message = format!("{},{msg},{without_proof}", self.client_first_bare);
        let client_key = h.hmac(&salted, b"Client Key");
        let stored_key = h.hash(&client_key);
        let signature = h.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        let server_key = h.hmac(&salted, b"Server Key");
        self.expected_server_signature = Some(h.hmac(&server_key, auth_message.as_bytes()));
        self.salted = Some(salted);
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Check server-final-message (mutual authentication).
    pub fn verify_server_final(&self, msg: &[u8]) -> Result<(), SaslFailure> {
        let msg = std::str::from_utf8(msg).map_err(|_| SaslFailure::MalformedRequest)?;
        let v = msg.strip_prefix("v=").ok_or(SaslFailure::NotAuthorized)?;
        let v = B64.decode(v).map_err(|_| SaslFailure::MalformedRequest)?;
        match &self.expected_server_signature {
            Some(exp) if constant_time_eq(exp, &v) => Ok(()),
            _ => Err(SaslFailure::NotAuthorized),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vector(
        hash: ScramHash,
        cnonce: &str,
        snonce: &str,
        salt: &str,
        first: &str,
        fin: &str,
        server_fin: &str,
    ) {
        let salt = B64.decode(salt).unwrap();
        let creds = ScramCredentials::derive(hash, "pencil", &salt, 4096).unwrap();
        let mut s = ScramServer::with_nonce(hash, snonce);
        let cf = s.client_first(format!("n,,n=user,r={cnonce}").as_bytes()).unwrap();
        assert_eq!(cf.username, "user");
        assert_eq!(String::from_utf8(s.server_first(&creds)).unwrap(), first);
        assert_eq!(String::from_utf8(s.client_final(fin.as_bytes()).unwrap()).unwrap(), server_fin);
        // The client side produces the same messages.
        let mut c = ScramClient::new(hash, "user", "pencil", cnonce);
        assert_eq!(String::from_utf8(c.handle_server_first(first.as_bytes()).unwrap()).unwrap(), fin);
        c.verify_server_final(server_fin.as_bytes()).unwrap();
    }

    #[test]
    fn rfc5802_sha1_example() {
        vector(
            ScramHash::Sha1,
            "fyko+d2lbbFgONRv9qkxdawL",
            "3rfcNHYJY1ZVvWVs7j",
            "QSXCR+Q6sek8bf92",
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
        );
    }

    #[test]
    fn rfc7677_sha256_example() {
        vector(
            ScramHash::Sha256,
            "rOprNGfwEbeRWgbNEkqO",
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            "W22ZaJ0SNY7soEsUEjb6gQ==",
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        );
    }

    fn exchange(hash: ScramHash, user: &str, stored_pw: &str, offered_pw: &str) -> Result<(), SaslFailure> {
        let creds = ScramCredentials::generate(hash, stored_pw, 4096).unwrap();
        let mut c = ScramClient::new(hash, user, offered_pw, "abcdefghijkl");
        let mut s = ScramServer::new(hash);
        let first = s.client_first(&c.client_first())?;
        assert_eq!(first.username, user);
        let sf = s.server_first(&creds);
        let cf = c.handle_server_first(&sf)?;
        let fin = s.client_final(&cf)?;
        c.verify_server_final(&fin)
    }

    #[test]
    fn round_trips_and_wrong_passwords() {
        for h in [ScramHash::Sha1, ScramHash::Sha256] {
            exchange(h, "alice", "pw", "pw").unwrap();
            exchange(h, "we,ird=name", "pw", "pw").unwrap();
            assert_eq!(exchange(h, "alice", "pw", "nope"), Err(SaslFailure::NotAuthorized));
        }
    }

    #[test]
    fn decoys_never_verify() {
        let creds = ScramCredentials::decoy(ScramHash::Sha256, "ghost", b"secret");
        assert_eq!(creds.salt, ScramCredentials::decoy(ScramHash::Sha256, "ghost", b"secret").salt);
        let mut c = ScramClient::new(ScramHash::Sha256, "ghost", "anything", "nonce123");
        let mut s = ScramServer::new(ScramHash::Sha256);
        s.client_first(&c.client_first()).unwrap();
        let cf = c.handle_server_first(&s.server_first(&creds)).unwrap();
        assert_eq!(s.client_final(&cf), Err(SaslFailure::NotAuthorized));
    }

    #[test]
    fn malformed_and_out_of_order() {
        for bad in [
            "",
            "n",
            "n,,",
            "p=tls-unique,,n=a,r=x",
            "n,,n=a",
            "n,,r=x,n=a",
            "n,,n=a=zz,r=x",
            "n,,n=,r=x",
            "q,,n=a,r=x",
        ] {
            let mut s = ScramServer::new(ScramHash::Sha1);
            assert!(s.client_first(bad.as_bytes()).is_err(), "{bad}");
        }
        let mut s = ScramServer::new(ScramHash::Sha1);
        assert_eq!(s.client_final(b"c=biws,r=x,p=AAAA"), Err(SaslFailure::MalformedRequest));
        assert!(s.server_first(&ScramCredentials::decoy(ScramHash::Sha1, "a", b"k")).is_empty());
        // Channel-binding data that does not match the GS2 header.
        let creds = ScramCredentials::generate(ScramHash::Sha1, "pw", 4096).unwrap();
        let mut s = ScramServer::with_nonce(ScramHash::Sha1, "srv");
        s.client_first(b"n,,n=a,r=cli").unwrap();
        s.server_first(&creds);
        assert_eq!(s.client_final(b"c=eSws,r=clisrv,p=AAAA"), Err(SaslFailure::NotAuthorized));
        let mut s = ScramServer::with_nonce(ScramHash::Sha1, "srv");
        s.client_first(b"n,,n=a,r=cli").unwrap();
        s.server_first(&creds);
        assert_eq!(s.client_final(b"c=biws,r=WRONG,p=AAAA"), Err(SaslFailure::NotAuthorized));
    }

    #[test]
    fn verify_password_for_plain() {
        let c = ScramCredentials::generate(ScramHash::Sha256, "correct horse", 4096).unwrap();
        assert!(c.verify_password("correct horse"));
        assert!(!c.verify_password("correct horse "));
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics(a in prop::collection::vec(any::<u8>(), 0..200), b in prop::collection::vec(any::<u8>(), 0..200)) {
            let mut s = ScramServer::new(ScramHash::Sha256);
            if s.client_first(&a).is_ok() {
                s.server_first(&ScramCredentials::decoy(ScramHash::Sha256, "x", b"k"));
            }
            let _ = s.client_final(&b);
            let _ = super::super::parse_plain(&a);
        }
    }
}
