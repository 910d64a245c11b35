//! Durable Raft storage on redb: the log, the vote, the committed index and snapshots in one file,
//! `<data_dir>/raft.redb`; the state machine in memory.
//!
//! The state machine is not written on every apply. On start it is loaded from the last snapshot
//! (if any), and openraft re-applies the log from there up to the saved committed index (that is
//! what [`RaftLogStorage::save_committed`] and `read_committed` are for), so the state after a
//! restart is the state before it. Snapshots are built from the in-memory state (JSON of
//! [`Applied`]) and kept in the same file, replacing the previous one; the log below a snapshot
//! can then be purged by openraft.
//!
//! redb calls block; writes (which fsync) run on tokio's blocking pool. Reads are served from
//! redb's cache and stay inline.

use crate::error::RegistryError;
use crate::state::{ClusterState, Command, Response};
use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, LogState, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StoredMembership, Vote,
};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

openraft::declare_raft_types!(
    /// The registry's openraft types: [`Command`] entries, [`Response`] replies, `u64` node ids,
    /// [`BasicNode`] (its gRPC address) for nodes, and snapshots as in-memory JSON bytes.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Log entries by index, each as openraft's `Entry` in JSON.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// Single values by name (the `KEY_*` constants), JSON except the snapshot bytes.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "last_purged";
const KEY_SNAPSHOT_META: &str = "snapshot_meta";
const KEY_SNAPSHOT_DATA: &str = "snapshot_data";

/// The state machine's content: what a snapshot holds and what every apply publishes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The last log entry applied (`None` before the first).
    pub last_applied: Option<LogId<u64>>,
    /// The last membership config applied: openraft asks for it back on start.
    pub membership: StoredMembership<u64, BasicNode>,
    /// The registry data.
    pub state: ClusterState,
}

impl Applied {
    /// The index of the last applied entry, 0 before the first.
    pub fn index(&self) -> u64 {
        self.last_applied.map(|l| l.index).unwrap_or(0)
    }
}

fn sto_err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError<u64> {
    StorageError::from_io_error(subject, verb, std::io::Error::other(e.to_string()))
}

/// Runs a blocking closure on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(format!("blocking task: {e}")),
    }
}

/// One write transaction with `durability`, committed when `f` succeeds.
fn write(
    db: &Database,
    durability: Durability,
    f: impl FnOnce(&WriteTransaction) -> Result<(), redb::Error>,
) -> Result<(), String> {
    let run = || -> Result<(), redb::Error> {
        let mut tx = db.begin_write()?;
        tx.set_durability(durability).map_err(|e| redb::Error::Corrupted(e.to_string()))?;
        f(&tx)?;
        tx.commit()?;
        Ok(())
    };
    run().map_err(|e| e.to_string())
}

fn read_meta(db: &Database, key: &str) -> Result<Option<Vec<u8>>, String> {
    let run = || -> Result<Option<Vec<u8>>, redb::Error> {
        let tx = db.begin_read()?;
        let t = tx.open_table(META)?;
        Ok(t.get(key)?.map(|v| v.value().to_vec()))
    };
    run().map_err(|e| e.to_string())
}

fn read_meta_json<T: serde::de::DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>, String> {
    match read_meta(db, key)? {
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| format!("{key}: {e}")),
        None => Ok(None),
    }
}

/// Everything [`open`] returns: the two halves openraft takes, and the handles the node keeps.
pub struct Store {
    /// The log half, for `Raft::new`.
    pub log: LogStore,
    /// The state machine half, for `Raft::new`.
    pub sm: StateMachine,
    /// Follows the state machine: a new value after every applied batch and installed snapshot.
    pub applied: watch::Receiver<Arc<Applied>>,
    /// The last committed log index openraft saved (for `Status`; openraft's metrics lack it).
    pub committed: Arc<AtomicU64>,
}

/// Opens (or creates) `<dir>/raft.redb` and loads the state machine from its snapshot.
pub fn open(dir: &Path) -> Result<Store, RegistryError> {
    std::fs::create_dir_all(dir)?;
    // The registry is small: a modest cache instead of redb's 1 GiB default.
    let db = Database::builder()
        .set_cache_size(32 << 20)
        .create(dir.join("raft.redb"))
        .map_err(redb::Error::from)?;
    write(&db, Durability::Immediate, |tx| {
        tx.open_table(LOG)?;
        tx.open_table(META)?;
        Ok(())
    })
    .map_err(RegistryError::Storage)?;
    let db = Arc::new(db);
    let mut data = Applied::default();
    let meta: Option<SnapshotMeta<u64, BasicNode>> =
        read_meta_json(&db, KEY_SNAPSHOT_META).map_err(RegistryError::Storage)?;
    if let Some(meta) = meta {
        let bytes = read_meta(&db, KEY_SNAPSHOT_DATA).map_err(RegistryError::Storage)?.unwrap_or_default();
        let snap: Applied = serde_json::from_slice(&bytes)?;
        data =
            Applied { last_applied: meta.last_log_id, membership: meta.last_membership, state: snap.state };
    }
    let committed: Option<LogId<u64>> = read_meta_json(&db, KEY_COMMITTED).map_err(RegistryError::Storage)?;
    let committed = Arc::new(AtomicU64::new(committed.map(|c| c.index).unwrap_or(0)));
    let (tx, rx) = watch::channel(Arc::new(data.clone()));
    Ok(Store {
        log: LogStore { db: db.clone(), committed: committed.clone() },
        sm: StateMachine { db, data, published: tx },
        applied: rx,
        committed,
    })
}

/// The Raft log, vote and committed index in redb. Cheap to clone (it is also the log reader).
#[derive(Clone)]
pub struct LogStore {
    /// The shared database file.
    db: Arc<Database>,
    /// Mirrors the saved committed index for readers outside openraft.
    committed: Arc<AtomicU64>,
}

impl LogStore {
    fn entries(&self, start: Bound<&u64>, end: Bound<&u64>) -> Result<Vec<Entry<TypeConfig>>, String> {
        let from = match start {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let to = match end {
            Bound::Included(e) => e.checked_add(1),
            Bound::Excluded(e) => Some(*e),
            Bound::Unbounded => None,
        };
        if to.is_some_and(|t| t <= from) {
            return Ok(Vec::new());
        }
        let run = || -> Result<Vec<Entry<TypeConfig>>, redb::Error> {
            let tx = self.db.begin_read()?;
            let t = tx.open_table(LOG)?;
            let rows = match to {
                Some(to) => t.range(from..to)?,
                None => t.range(from..)?,
            };
            let mut out = Vec::new();
            for row in rows {
                let (_, v) = row?;
                let e =
                    serde_json::from_slice(v.value()).map_err(|e| redb::Error::Corrupted(e.to_string()))?;
                out.push(e);
            }
            Ok(out)
        };
        run().map_err(|e| e.to_string())
    }

    fn last_entry(&self) -> Result<Option<Entry<TypeConfig>>, String> {
        let run = || -> Result<Option<Entry<TypeConfig>>, redb::Error> {
            let tx = self.db.begin_read()?;
            let t = tx.open_table(LOG)?;
            let last = match t.last()? {
                Some((_, v)) => serde_json::from_slice(v.value())
                    .map(Some)
                    .map_err(|e| redb::Error::Corrupted(e.to_string())),
                None => Ok(None),
            };
            last
        };
        run().map_err(|e| e.to_string())
    }

    async fn put_meta(
        &self,
        key: &'static str,
        value: Vec<u8>,
        durability: Durability,
    ) -> Result<(), String> {
        let db = self.db.clone();
        blocking(move || {
            write(&db, durability, |tx| {
                tx.open_table(META)?.insert(key, value.as_slice())?;
                Ok(())
            })
        })
        .await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        self.entries(range.start_bound(), range.end_bound())
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let purged: Option<LogId<u64>> = read_meta_json(&self.db, KEY_PURGED)
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        let last = self.last_entry().map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        let last_log_id = last.map(|e| e.log_id).or(purged);
        Ok(LogState { last_purged_log_id: purged, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let bytes = serde_json::to_vec(vote).map_err(|e| sto_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.put_meta(KEY_VOTE, bytes, Durability::Immediate)
            .await
            .map_err(|e| sto_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        read_meta_json(&self.db, KEY_VOTE).map_err(|e| sto_err(ErrorSubject::Vote, ErrorVerb::Read, e))
    }

    /// Saved without fsync: losing the last committed index in a crash only means re-applying
    /// less on start; the leader commits the rest again.
    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError<u64>> {
        let bytes =
            serde_json::to_vec(&committed).map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        self.put_meta(KEY_COMMITTED, bytes, Durability::None)
            .await
            .map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        self.committed.store(committed.map(|c| c.index).unwrap_or(0), Ordering::Relaxed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        let c: Option<Option<LogId<u64>>> = read_meta_json(&self.db, KEY_COMMITTED)
            .map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Read, e))?;
        Ok(c.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = Vec::new();
        for e in entries {
            let bytes = serde_json::to_vec(&e)
                .map_err(|err| sto_err(ErrorSubject::Log(e.log_id), ErrorVerb::Write, err))?;
            rows.push((e.log_id.index, bytes));
        }
        let db = self.db.clone();
        let res = blocking(move || {
            write(&db, Durability::Immediate, |tx| {
                let mut t = tx.open_table(LOG)?;
                for (i, bytes) in &rows {
                    t.insert(*i, bytes.as_slice())?;
                }
                Ok(())
            })
        })
        .await;
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.clone())));
                Err(sto_err(ErrorSubject::Logs, ErrorVerb::Write, e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let db = self.db.clone();
        blocking(move || {
            write(&db, Durability::Immediate, |tx| {
                tx.open_table(LOG)?.retain_in(log_id.index.., |_, _| false)?;
                Ok(())
            })
        })
        .await
        .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let bytes =
            serde_json::to_vec(&log_id).map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        let db = self.db.clone();
        blocking(move || {
            write(&db, Durability::Immediate, |tx| {
                tx.open_table(META)?.insert(KEY_PURGED, bytes.as_slice())?;
                tx.open_table(LOG)?.retain_in(..=log_id.index, |_, _| false)?;
                Ok(())
            })
        })
        .await
        .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

/// Stores a snapshot unless the stored one is newer (a slow build must not replace a snapshot
/// installed from the leader meanwhile).
fn persist_snapshot(db: &Database, meta: &SnapshotMeta<u64, BasicNode>, data: &[u8]) -> Result<(), String> {
    let meta_json = serde_json::to_vec(meta).map_err(|e| e.to_string())?;
    let stored: Option<SnapshotMeta<u64, BasicNode>> = read_meta_json(db, KEY_SNAPSHOT_META)?;
    if stored.is_some_and(|s| s.last_log_id > meta.last_log_id) {
        return Ok(());
    }
    write(db, Durability::Immediate, |tx| {
        let mut t = tx.open_table(META)?;
        t.insert(KEY_SNAPSHOT_META, meta_json.as_slice())?;
        t.insert(KEY_SNAPSHOT_DATA, data)?;
        Ok(())
    })
}

/// The in-memory state machine; snapshots go to the same redb file as the log.
pub struct StateMachine {
    /// The shared database file (snapshots).
    db: Arc<Database>,
    /// The current content.
    data: Applied,
    /// Publishes `data` after every change, for the node's view and `Watch` streams.
    published: watch::Sender<Arc<Applied>>,
}

impl StateMachine {
    fn publish(&self) {
        self.published.send_replace(Arc::new(self.data.clone()));
    }
}

/// Builds a snapshot from a copy of the state taken when openraft asked for the builder.
pub struct SnapshotBuilder {
    /// Where the snapshot is kept.
    db: Arc<Database>,
    /// The state to snapshot.
    data: Applied,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let bytes = serde_json::to_vec(&self.data)
            .map_err(|e| sto_err(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let meta = SnapshotMeta {
            last_log_id: self.data.last_applied,
            last_membership: self.data.membership.clone(),
            snapshot_id: format!("{}-{nanos}", self.data.index()),
        };
        let (db, m, b) = (self.db.clone(), meta.clone(), bytes.clone());
        blocking(move || persist_snapshot(&db, &m, &b))
            .await
            .map_err(|e| sto_err(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Write, e))?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        Ok((self.data.last_applied, self.data.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        for e in entries {
            self.data.last_applied = Some(e.log_id);
            let r = match e.payload {
                EntryPayload::Normal(cmd) => self.data.state.apply(&cmd),
                EntryPayload::Membership(m) => {
                    self.data.membership = StoredMembership::new(Some(e.log_id), m);
                    Response { changed: false, epoch: self.data.state.epoch }
                }
                EntryPayload::Blank => Response { changed: false, epoch: self.data.state.epoch },
            };
            out.push(r);
        }
        self.publish();
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { db: self.db.clone(), data: self.data.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let bytes = snapshot.into_inner();
        let snap: Applied =
            serde_json::from_slice(&bytes).map_err(|e| sto_err(subject(), ErrorVerb::Read, e))?;
        let (db, m, b) = (self.db.clone(), meta.clone(), bytes);
        blocking(move || persist_snapshot(&db, &m, &b))
            .await
            .map_err(|e| sto_err(subject(), ErrorVerb::Write, e))?;
        self.data = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state: snap.state,
        };
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let err = |e| sto_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e);
        let meta: Option<SnapshotMeta<u64, BasicNode>> =
            read_meta_json(&self.db, KEY_SNAPSHOT_META).map_err(err)?;
        let Some(meta) = meta else { return Ok(None) };
        let bytes = read_meta(&self.db, KEY_SNAPSHOT_DATA).map_err(err)?.unwrap_or_default();
        Ok(Some(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::state::{Member, MemberRole, MemberState};
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{CommittedLeaderId, Membership, StorageHelper};
    use std::collections::BTreeSet;

    /// A fresh store in a fresh temporary directory; the directory lives as long as the store.
    struct TempStore;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for TempStore {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
            let dir = tempfile::tempdir().map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
            let store = open(dir.path()).map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
            Ok((dir, store.log, store.sm))
        }
    }

    #[test]
    fn openraft_storage_suite() {
        Suite::test_all(TempStore).unwrap();
    }

    fn log_id(term: u64, index: u64) -> LogId<u64> {
        LogId { leader_id: CommittedLeaderId::new(term, 1), index }
    }

    fn entry(index: u64, cmd: Command) -> Entry<TypeConfig> {
        Entry { log_id: log_id(1, index), payload: EntryPayload::Normal(cmd) }
    }

    async fn append(log: &mut LogStore, entries: Vec<Entry<TypeConfig>>) {
        openraft::storage::RaftLogStorageExt::blocking_append(log, entries).await.unwrap();
    }

    fn router(id: u64) -> Member {
        Member { id, role: MemberRole::Router, addr: format!("127.0.0.1:{id}"), state: MemberState::Active }
    }

    #[tokio::test]
    async fn state_comes_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let membership = Membership::new(vec![BTreeSet::from([1])], None);
        let moves = crate::slots::rebalance(&crate::slots::SlotTable::default(), &[1, 2]);
        let entries = vec![
            Entry { log_id: log_id(1, 0), payload: EntryPayload::Membership(membership.clone()) },
            entry(1, Command::UpsertMember(router(1))),
            entry(2, Command::UpsertMember(router(2))),
            entry(3, Command::AssignSlots { moves }),
        ];
        let mut expected = ClusterState::default();
        for e in &entries {
            if let EntryPayload::Normal(c) = &e.payload {
                expected.apply(c);
            }
        }
        {
            let Store { mut log, mut sm, .. } = open(dir.path()).unwrap();
            append(&mut log, entries.clone()).await;
            sm.apply(entries[..2].to_vec()).await.unwrap();
            // A snapshot at 1; entries 2 and 3 only in the log.
            sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
            sm.apply(entries[2..].to_vec()).await.unwrap();
            log.save_committed(Some(log_id(1, 3))).await.unwrap();
            log.save_vote(&Vote::new(1, 1)).await.unwrap();
        }
        let Store { mut log, mut sm, applied, committed } = open(dir.path()).unwrap();
        assert_eq!(applied.borrow().index(), 1, "loaded from the snapshot");
        assert_eq!(committed.load(Ordering::Relaxed), 3);
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(1, 1)));
        let state = StorageHelper::new(&mut log, &mut sm).get_initial_state().await.unwrap();
        assert_eq!(state.committed, Some(log_id(1, 3)), "committed index read back");
        assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 3)), "committed entries re-applied");
        let now = applied.borrow().clone();
        assert_eq!(now.state, expected);
        assert_eq!(now.state.slots.unowned(), 0);
        assert_eq!(now.membership.membership(), &membership);
    }
}
