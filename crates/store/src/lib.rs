//! Starling's storage boundary.
//!
//! One trait per concern, so a backend can be swapped per concern later and each caller asks only
//! for what it uses:
//! - [`AccountStore`]: accounts and their SCRAM credentials (never passwords).
//! - [`RosterStore`]: roster items with a per-user version counter (RFC 6121 §2.6).
//! - [`OfflineStore`]: stanzas kept for offline users (XEP-0160), bounded per user.
//! - [`DocumentStore`]: small per-user XML documents: vcard-temp (XEP-0054), private XML (XEP-0049).
//!
//! [`Store`] bundles them. Two backends implement all of them:
//! - [`embedded::EmbeddedStore`]: a single redb file, for one node (`serve`).
//! - [`crate::redis::RedisStore`]: one Redis server or a Redis Cluster, shared by every router of a
//!   cluster so any router can own any user; see [`crate::redis`] for the key layout.
//!
//! Both behave identically (the same conformance test runs against each).
//! Calls are blocking (they may fsync or wait on the network); async callers go through [`call`],
//! which runs them on a blocking thread, except the reads of a backend whose reads are local
//! ([`Backend::local_reads`]): those run in place, since handing a few microseconds of work to
//! another thread and back costs more than the work.

pub mod codec;
pub mod embedded;
pub mod redis;

use starling_xmpp::roster::RosterItem;
use starling_xmpp::sasl::ScramCredentials;

pub use crate::redis::RedisStore;
pub use embedded::EmbeddedStore;

/// Storage failures. Callers map them to `internal-server-error` / `resource-constraint`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The account to create exists already.
    #[error("account already exists")]
    AccountExists,
    /// The account does not exist.
    #[error("no such account")]
    NoSuchAccount,
    /// The backend failed (I/O, corruption, encoding).
    #[error("storage backend: {0}")]
    Backend(String),
}

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// What every backend tells its callers about itself.
pub trait Backend: Send + Sync {
    /// Whether reads are served from this process's memory or the OS page cache (no network, no
    /// lock a writer holds), so they may run on an async worker. Writes never do: they fsync or
    /// wait on the network. False unless a backend says otherwise.
    fn local_reads(&self) -> bool {
        false
    }
}

/// Whether a store call only reads or may write (see [`call`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The call only reads.
    Read,
    /// The call may write.
    Write,
}

/// Run a store call from async code: in place for a read of a backend with
/// [local reads](Backend::local_reads), on a blocking thread otherwise.
pub async fn call<S, T, F>(store: &std::sync::Arc<S>, access: Access, f: F) -> StoreResult<T>
where
    S: Backend + ?Sized + 'static,
    T: Send + 'static,
    F: FnOnce(&S) -> StoreResult<T> + Send + 'static,
{
    if access == Access::Read && store.local_reads() {
        return f(store);
    }
    let store = store.clone();
    match tokio::task::spawn_blocking(move || f(&*store)).await {
        Ok(r) => r,
        Err(e) => Err(StoreError::Backend(format!("store task failed: {e}"))),
    }
}

/// Accounts, keyed by bare JID (`local@domain`, already normalized by the caller).
pub trait AccountStore: Backend {
    /// Create an account. Fails with [`StoreError::AccountExists`].
    fn create_account(&self, user: &str, creds: Vec<ScramCredentials>) -> StoreResult<()>;
    /// Replace credentials (password change). Fails with [`StoreError::NoSuchAccount`].
    fn set_credentials(&self, user: &str, creds: Vec<ScramCredentials>) -> StoreResult<()>;
    /// The account's credentials, one per SCRAM hash, or None if no such account.
    fn credentials(&self, user: &str) -> StoreResult<Option<Vec<ScramCredentials>>>;
    /// Remove the account and everything stored for it. Returns whether it existed.
    fn remove_account(&self, user: &str) -> StoreResult<bool>;
    /// All accounts, sorted.
    fn list_accounts(&self) -> StoreResult<Vec<String>>;
}

/// Rosters (RFC 6121 §2). Every change bumps the user's roster version.
pub trait RosterStore: Backend {
    /// The whole roster and its current version.
    fn roster(&self, user: &str) -> StoreResult<(u64, Vec<RosterItem>)>;
    /// One item.
    fn roster_item(&self, user: &str, contact: &str) -> StoreResult<Option<RosterItem>>;
    /// Insert or replace an item; returns the new roster version.
    fn put_roster_item(&self, user: &str, item: &RosterItem) -> StoreResult<u64>;
    /// Remove an item; returns the new version if it existed.
    fn remove_roster_item(&self, user: &str, contact: &str) -> StoreResult<Option<u64>>;
}

/// Offline message storage (XEP-0160).
pub trait OfflineStore: Backend {
    /// Append a serialized stanza unless the user already has `max` stored; returns whether it was stored.
    fn push_offline(&self, user: &str, stanza: &[u8], max: usize) -> StoreResult<bool>;
    /// Remove and return all stored stanzas, oldest first.
    fn take_offline(&self, user: &str) -> StoreResult<Vec<Vec<u8>>>;
    /// How many stanzas are stored.
    fn count_offline(&self, user: &str) -> StoreResult<usize>;
}

/// Small per-user XML documents, keyed by a name chosen by the service (e.g. `vcard`, or
/// `private:{ns}name` for XEP-0049).
pub trait DocumentStore: Backend {
    /// The stored document.
    fn document(&self, user: &str, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Store (replace) a document; None deletes it.
    fn set_document(&self, user: &str, key: &str, value: Option<&[u8]>) -> StoreResult<()>;
}

/// Everything a node stores.
pub trait Store: AccountStore + RosterStore + OfflineStore + DocumentStore {}
impl<T: AccountStore + RosterStore + OfflineStore + DocumentStore> Store for T {}

/// SCRAM iteration count for new credentials. 4096 is RFC 7677's minimum recommendation and what
/// ejabberd and Prosody use; raising it slows logins linearly.
pub const DEFAULT_SCRAM_ITERATIONS: u32 = 4096;

/// Credentials for a new password: one SCRAM-SHA-1 and one SCRAM-SHA-256 entry, each with its own
/// random salt, so clients may use either mechanism. The password itself is not kept.
pub fn derive_credentials(
    password: &str,
    iterations: u32,
) -> Result<Vec<ScramCredentials>, starling_xmpp::sasl::SaslFailure> {
    use starling_xmpp::sasl::ScramHash;
    Ok(vec![
        ScramCredentials::generate(ScramHash::Sha256, password, iterations)?,
        ScramCredentials::generate(ScramHash::Sha1, password, iterations)?,
    ])
}
