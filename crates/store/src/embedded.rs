//! The embedded backend: one redb database file under the data directory.
//!
//! Tables (keys are bare JIDs as strings):
//! - `accounts`: user → SCRAM credentials ([`crate::codec`])
//! - `roster`: (user, contact) → JSON roster item; `roster_ver`: user → u64
//! - `offline`: (user, seq) → stanza bytes; `offline_seq`: user → next seq
//! - `documents`: (user, key) → bytes

use crate::codec::{decode_credentials, encode_credentials};
use crate::{AccountStore, Backend, DocumentStore, OfflineStore, RosterStore, StoreError, StoreResult};
use redb::{Database, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};
use starling_xmpp::roster::RosterItem;
use starling_xmpp::sasl::ScramCredentials;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
const ROSTER: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("roster");
const ROSTER_VER: TableDefinition<&str, u64> = TableDefinition::new("roster_ver");
const OFFLINE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("offline");
const OFFLINE_SEQ: TableDefinition<&str, u64> = TableDefinition::new("offline_seq");
const DOCUMENTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("documents");

/// All stores on one redb file.
pub struct EmbeddedStore {
    /// The database; redb serializes writers and lets readers run concurrently.
    db: Database,
    /// The read snapshot readers share until the next write commits (see [`Snapshot`]).
    snapshot: Mutex<Cached>,
}

/// The shared read snapshot and the count of commits it was taken after.
#[derive(Default)]
struct Cached {
    /// Commits made through this store so far.
    commits: u64,
    /// A snapshot taken when `commits` was current, if a reader has asked for one since.
    snapshot: Option<Arc<Snapshot>>,
}

/// One read transaction and the tables opened on it, shared by every reader until a write
/// commits. Beginning a transaction and opening a table by name cost more than the lookup a
/// login makes (two dozen allocations and ~9k instructions for the credentials and the
/// roster), and this process is the database's only writer, so it knows when a snapshot goes
/// stale: every commit drops it, and the next reader takes a fresh one. A reader that took the
/// snapshot just before a commit reads as if it had run just before it, as a read transaction
/// begun then would have.
struct Snapshot {
    tx: ReadTransaction,
    accounts: OnceLock<ReadOnlyTable<&'static str, &'static [u8]>>,
    roster: OnceLock<ReadOnlyTable<(&'static str, &'static str), &'static [u8]>>,
    roster_ver: OnceLock<ReadOnlyTable<&'static str, u64>>,
    offline: OnceLock<ReadOnlyTable<(&'static str, u64), &'static [u8]>>,
    documents: OnceLock<ReadOnlyTable<(&'static str, &'static str), &'static [u8]>>,
}

impl Snapshot {
    /// The table in `slot`, opened on this snapshot's transaction the first time it is asked for.
    fn table<'s, K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        slot: &'s OnceLock<ReadOnlyTable<K, V>>,
        definition: TableDefinition<K, V>,
    ) -> StoreResult<&'s ReadOnlyTable<K, V>> {
        if let Some(table) = slot.get() {
            return Ok(table);
        }
        let table = self.tx.open_table(definition).map_err(backend)?;
        // Two readers may race to open it; either table serves.
        Ok(slot.get_or_init(|| table))
    }
}

fn backend<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl EmbeddedStore {
    /// Open (or create) the database at `path`, creating every table so reads never miss one.
    pub fn open(path: &Path) -> StoreResult<EmbeddedStore> {
        let db = Database::create(path).map_err(backend)?;
        let tx = db.begin_write().map_err(backend)?;
        {
            tx.open_table(ACCOUNTS).map_err(backend)?;
            tx.open_table(ROSTER).map_err(backend)?;
            tx.open_table(ROSTER_VER).map_err(backend)?;
            tx.open_table(OFFLINE).map_err(backend)?;
            tx.open_table(OFFLINE_SEQ).map_err(backend)?;
            tx.open_table(DOCUMENTS).map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        Ok(EmbeddedStore { db, snapshot: Mutex::new(Cached::default()) })
    }

    /// Commit a write and drop the shared read snapshot, which no longer shows the database.
    fn commit(&self, tx: redb::WriteTransaction) -> StoreResult<()> {
        tx.commit().map_err(backend)?;
        let mut cached = self.snapshot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        cached.commits += 1;
        cached.snapshot = None;
        Ok(())
    }

    /// The current read snapshot: the shared one, or a new one (shared from then on unless a
    /// write committed while it was being taken).
    fn snapshot(&self) -> StoreResult<Arc<Snapshot>> {
        let commits = {
            let cached = self.snapshot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(snapshot) = &cached.snapshot {
                return Ok(Arc::clone(snapshot));
            }
            cached.commits
        };
        let snapshot = Arc::new(Snapshot {
            tx: self.db.begin_read().map_err(backend)?,
            accounts: OnceLock::new(),
            roster: OnceLock::new(),
            roster_ver: OnceLock::new(),
            offline: OnceLock::new(),
            documents: OnceLock::new(),
        });
        let mut cached = self.snapshot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if cached.commits == commits {
            cached.snapshot = Some(Arc::clone(&snapshot));
        }
        Ok(snapshot)
    }

    fn bump_roster_ver(tx: &redb::WriteTransaction, user: &str) -> StoreResult<u64> {
        let mut t = tx.open_table(ROSTER_VER).map_err(backend)?;
        let next = t.get(user).map_err(backend)?.map(|v| v.value()).unwrap_or(0) + 1;
        t.insert(user, next).map_err(backend)?;
        Ok(next)
    }
}

/// Reads use the shared read snapshot: no writer blocks it, and the pages come from the
/// database's cache or the OS page cache (one `pread` of a page on a miss).
impl Backend for EmbeddedStore {
    fn local_reads(&self) -> bool {
        true
    }
}

impl AccountStore for EmbeddedStore {
    fn create_account(&self, user: &str, creds: Vec<ScramCredentials>) -> StoreResult<()> {
        let bytes = encode_credentials(&creds).map_err(backend)?;
        let tx = self.db.begin_write().map_err(backend)?;
        {
            let mut t = tx.open_table(ACCOUNTS).map_err(backend)?;
            if t.get(user).map_err(backend)?.is_some() {
                return Err(StoreError::AccountExists);
            }
            t.insert(user, bytes.as_slice()).map_err(backend)?;
        }
        self.commit(tx)
    }

    fn set_credentials(&self, user: &str, creds: Vec<ScramCredentials>) -> StoreResult<()> {
        let bytes = encode_credentials(&creds).map_err(backend)?;
        let tx = self.db.begin_write().map_err(backend)?;
        {
            let mut t = tx.open_table(ACCOUNTS).map_err(backend)?;
            if t.get(user).map_err(backend)?.is_none() {
                return Err(StoreError::NoSuchAccount);
            }
            t.insert(user, bytes.as_slice()).map_err(backend)?;
        }
        self.commit(tx)
    }

    fn credentials(&self, user: &str) -> StoreResult<Option<Vec<ScramCredentials>>> {
        let snapshot = self.snapshot()?;
        let t = snapshot.table(&snapshot.accounts, ACCOUNTS)?;
        match t.get(user).map_err(backend)? {
            None => Ok(None),
            Some(v) => decode_credentials(v.value()).map(Some).map_err(backend),
        }
    }

    fn remove_account(&self, user: &str) -> StoreResult<bool> {
        let tx = self.db.begin_write().map_err(backend)?;
        let existed;
        {
            existed = tx.open_table(ACCOUNTS).map_err(backend)?.remove(user).map_err(backend)?.is_some();
            let mut roster = tx.open_table(ROSTER).map_err(backend)?;
            roster.retain_in((user, "")..=(user, "\u{10FFFF}"), |_, _| false).map_err(backend)?;
            tx.open_table(ROSTER_VER).map_err(backend)?.remove(user).map_err(backend)?;
            let mut offline = tx.open_table(OFFLINE).map_err(backend)?;
            offline.retain_in((user, 0)..=(user, u64::MAX), |_, _| false).map_err(backend)?;
            tx.open_table(OFFLINE_SEQ).map_err(backend)?.remove(user).map_err(backend)?;
            let mut docs = tx.open_table(DOCUMENTS).map_err(backend)?;
            docs.retain_in((user, "")..=(user, "\u{10FFFF}"), |_, _| false).map_err(backend)?;
        }
        self.commit(tx)?;
        Ok(existed)
    }

    fn list_accounts(&self) -> StoreResult<Vec<String>> {
        let tx = self.db.begin_read().map_err(backend)?;
        let t = tx.open_table(ACCOUNTS).map_err(backend)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(backend)? {
            let (k, _) = row.map_err(backend)?;
            out.push(k.value().to_owned());
        }
        Ok(out)
    }
}

impl RosterStore for EmbeddedStore {
    fn roster(&self, user: &str) -> StoreResult<(u64, Vec<RosterItem>)> {
        let snapshot = self.snapshot()?;
        let ver =
            snapshot.table(&snapshot.roster_ver, ROSTER_VER)?.get(user).map_err(backend)?.map(|v| v.value());
        let t = snapshot.table(&snapshot.roster, ROSTER)?;
        let mut items = Vec::new();
        for row in t.range((user, "")..=(user, "\u{10FFFF}")).map_err(backend)? {
            let (_, v) = row.map_err(backend)?;
            items.push(serde_json::from_slice(v.value()).map_err(backend)?);
        }
        Ok((ver.unwrap_or(0), items))
    }

    fn roster_item(&self, user: &str, contact: &str) -> StoreResult<Option<RosterItem>> {
        let snapshot = self.snapshot()?;
        let t = snapshot.table(&snapshot.roster, ROSTER)?;
        match t.get((user, contact)).map_err(backend)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(v.value()).map(Some).map_err(backend),
        }
    }

    fn put_roster_item(&self, user: &str, item: &RosterItem) -> StoreResult<u64> {
        let bytes = serde_json::to_vec(item).map_err(backend)?;
        let tx = self.db.begin_write().map_err(backend)?;
        {
            let mut t = tx.open_table(ROSTER).map_err(backend)?;
            t.insert((user, item.jid.as_str()), bytes.as_slice()).map_err(backend)?;
        }
        let ver = Self::bump_roster_ver(&tx, user)?;
        self.commit(tx)?;
        Ok(ver)
    }

    fn remove_roster_item(&self, user: &str, contact: &str) -> StoreResult<Option<u64>> {
        let tx = self.db.begin_write().map_err(backend)?;
        let existed =
            tx.open_table(ROSTER).map_err(backend)?.remove((user, contact)).map_err(backend)?.is_some();
        if !existed {
            return Ok(None);
        }
        let ver = Self::bump_roster_ver(&tx, user)?;
        self.commit(tx)?;
        Ok(Some(ver))
    }
}

impl OfflineStore for EmbeddedStore {
    fn push_offline(&self, user: &str, stanza: &[u8], max: usize) -> StoreResult<bool> {
        let tx = self.db.begin_write().map_err(backend)?;
        {
            let mut t = tx.open_table(OFFLINE).map_err(backend)?;
            let count = t.range((user, 0)..=(user, u64::MAX)).map_err(backend)?.count();
            if count >= max {
                return Ok(false);
            }
            let mut seqs = tx.open_table(OFFLINE_SEQ).map_err(backend)?;
            let seq = seqs.get(user).map_err(backend)?.map(|v| v.value()).unwrap_or(0);
            seqs.insert(user, seq + 1).map_err(backend)?;
            t.insert((user, seq), stanza).map_err(backend)?;
        }
        self.commit(tx)?;
        Ok(true)
    }

    fn take_offline(&self, user: &str) -> StoreResult<Vec<Vec<u8>>> {
        let tx = self.db.begin_write().map_err(backend)?;
        let mut out = Vec::new();
        {
            let mut t = tx.open_table(OFFLINE).map_err(backend)?;
            for row in t.range((user, 0)..=(user, u64::MAX)).map_err(backend)? {
                let (_, v) = row.map_err(backend)?;
                out.push(v.value().to_vec());
            }
            if out.is_empty() {
                return Ok(out);
            }
            t.retain_in((user, 0)..=(user, u64::MAX), |_, _| false).map_err(backend)?;
        }
        self.commit(tx)?;
        Ok(out)
    }

    fn count_offline(&self, user: &str) -> StoreResult<usize> {
        let snapshot = self.snapshot()?;
        let t = snapshot.table(&snapshot.offline, OFFLINE)?;
        Ok(t.range((user, 0)..=(user, u64::MAX)).map_err(backend)?.count())
    }
}

impl DocumentStore for EmbeddedStore {
    fn document(&self, user: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let snapshot = self.snapshot()?;
        let t = snapshot.table(&snapshot.documents, DOCUMENTS)?;
        Ok(t.get((user, key)).map_err(backend)?.map(|v| v.value().to_vec()))
    }

    fn set_document(&self, user: &str, key: &str, value: Option<&[u8]>) -> StoreResult<()> {
        let tx = self.db.begin_write().map_err(backend)?;
        {
            let mut t = tx.open_table(DOCUMENTS).map_err(backend)?;
            match value {
                Some(v) => {
                    t.insert((user, key), v).map_err(backend)?;
                }
                None => {
                    t.remove((user, key)).map_err(backend)?;
                }
            }
        }
        self.commit(tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use starling_xmpp::sasl::ScramHash;
    use starling_xmpp::BareJid;

    fn open() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(&dir.path().join("db.redb")).unwrap();
        (dir, s)
    }

    #[test]
    fn accounts_roundtrip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        {
            let s = EmbeddedStore::open(&path).unwrap();
            let c = ScramCredentials::derive(ScramHash::Sha256, "pw", b"salt", 4096).unwrap();
            s.create_account("a@d", vec![c]).unwrap();
            assert!(matches!(s.create_account("a@d", vec![]), Err(StoreError::AccountExists)));
            s.push_offline("a@d", b"<message/>", 10).unwrap();
        }
        let s = EmbeddedStore::open(&path).unwrap();
        let creds = s.credentials("a@d").unwrap().unwrap();
        assert!(creds[0].verify_password("pw"));
        assert_eq!(s.list_accounts().unwrap(), vec!["a@d".to_string()]);
        assert_eq!(s.count_offline("a@d").unwrap(), 1);
        assert!(s.remove_account("a@d").unwrap());
        assert!(s.credentials("a@d").unwrap().is_none());
        assert_eq!(s.count_offline("a@d").unwrap(), 0);
    }

    #[test]
    fn credentials_are_stored_as_base64_and_the_older_list_form_still_reads() {
        let c = ScramCredentials::derive(ScramHash::Sha1, "pw", b"salt", 4096).unwrap();
        let stored = serde_json::to_value(&c).unwrap();
        assert_eq!(stored["salt"], serde_json::json!("c2FsdA=="));
        assert!(stored["stored_key"].is_string() && stored["server_key"].is_string());
        // What stores written before the change hold: every byte string a list of numbers.
        let mut older = stored.clone();
        for field in ["salt", "stored_key", "server_key"] {
            let bytes: &[u8] = match field {
                "salt" => &c.salt,
                "stored_key" => &c.stored_key,
                _ => &c.server_key,
            };
            older[field] = serde_json::json!(bytes);
        }
        assert!(older["salt"].is_array());
        let read: ScramCredentials = serde_json::from_value(older).unwrap();
        assert_eq!(read, c);
        assert!(read.verify_password("pw"));
        assert!(serde_json::from_value::<ScramCredentials>(serde_json::json!({
            "hash": stored["hash"], "salt": "not base64!", "iterations": 4096,
            "stored_key": stored["stored_key"], "server_key": stored["server_key"]
        }))
        .is_err());
    }

    #[test]
    fn roster_versions_increase_and_items_are_per_user() {
        let (_d, s) = open();
        let item = RosterItem::new(&BareJid::new("b@d").unwrap());
        let v1 = s.put_roster_item("a@d", &item).unwrap();
        let v2 = s.put_roster_item("a@d", &item).unwrap();
        assert!(v2 > v1);
        s.put_roster_item("ab@d", &RosterItem::new(&BareJid::new("c@d").unwrap())).unwrap();
        let (ver, items) = s.roster("a@d").unwrap();
        assert_eq!(ver, v2);
        assert_eq!(items.len(), 1);
        assert_eq!(s.remove_roster_item("a@d", "b@d").unwrap(), Some(v2 + 1));
        assert_eq!(s.remove_roster_item("a@d", "b@d").unwrap(), None);
    }

    #[test]
    fn every_write_is_seen_by_the_next_read_though_readers_share_a_snapshot() {
        let (_d, s) = open();
        let old = ScramCredentials::derive(ScramHash::Sha1, "old", b"salt", 4096).unwrap();
        let new = ScramCredentials::derive(ScramHash::Sha1, "new", b"salt", 4096).unwrap();
        s.create_account("a@d", vec![old.clone()]).unwrap();
        // Reads in a row share one snapshot...
        assert_eq!(s.credentials("a@d").unwrap(), Some(vec![old.clone()]));
        assert_eq!(s.roster("a@d").unwrap(), (0, vec![]));
        let shared = s.snapshot().unwrap();
        assert!(Arc::ptr_eq(&shared, &s.snapshot().unwrap()));
        // ...and each kind of write replaces it.
        s.set_credentials("a@d", vec![new.clone()]).unwrap();
        assert!(!Arc::ptr_eq(&shared, &s.snapshot().unwrap()));
        assert_eq!(s.credentials("a@d").unwrap(), Some(vec![new]));
        let item = RosterItem::new(&BareJid::new("b@d").unwrap());
        let ver = s.put_roster_item("a@d", &item).unwrap();
        assert_eq!(s.roster("a@d").unwrap(), (ver, vec![item.clone()]));
        assert_eq!(s.roster_item("a@d", "b@d").unwrap(), Some(item));
        assert_eq!(s.remove_roster_item("a@d", "b@d").unwrap(), Some(ver + 1));
        assert_eq!(s.roster("a@d").unwrap(), (ver + 1, vec![]));
        assert_eq!(s.count_offline("a@d").unwrap(), 0);
        s.push_offline("a@d", b"<message/>", 10).unwrap();
        assert_eq!(s.count_offline("a@d").unwrap(), 1);
        s.take_offline("a@d").unwrap();
        assert_eq!(s.count_offline("a@d").unwrap(), 0);
        assert!(s.remove_account("a@d").unwrap());
        assert_eq!(s.credentials("a@d").unwrap(), None);
        // A snapshot still held by a reader keeps reading what it saw.
        assert!(shared.table(&shared.accounts, ACCOUNTS).unwrap().get("a@d").unwrap().is_some());
    }

    #[test]
    fn offline_is_bounded_and_ordered() {
        let (_d, s) = open();
        assert!(s.push_offline("a@d", b"1", 2).unwrap());
        assert!(s.push_offline("a@d", b"2", 2).unwrap());
        assert!(!s.push_offline("a@d", b"3", 2).unwrap());
        assert_eq!(s.take_offline("a@d").unwrap(), vec![b"1".to_vec(), b"2".to_vec()]);
        assert!(s.take_offline("a@d").unwrap().is_empty());
    }

    #[test]
    fn documents_set_get_delete() {
        let (_d, s) = open();
        s.set_document("a@d", "vcard", Some(b"<vCard/>")).unwrap();
        assert_eq!(s.document("a@d", "vcard").unwrap().as_deref(), Some(&b"<vCard/>"[..]));
        s.set_document("a@d", "vcard", None).unwrap();
        assert!(s.document("a@d", "vcard").unwrap().is_none());
    }
}
