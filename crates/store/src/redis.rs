//! The Redis backend: every store on one Redis server or one Redis Cluster, so that any router of
//! a Starling cluster can own any user.
//!
//! # Key layout
//!
//! All keys start with a configurable prefix ([`DEFAULT_PREFIX`], `starling:`). Every key of one
//! user carries the user in a hash tag (`{...}`), so they all live in one Redis Cluster hash slot
//! and each multi-key operation on one user is a single Lua script on one node:
//!
//! | key | type | contents |
//! | --- | --- | --- |
//! | `{prefix}{user}:acct` | STRING | SCRAM credentials ([`crate::codec`]) |
//! | `{prefix}{user}:roster` | HASH | contact bare JID → JSON roster item |
//! | `{prefix}{user}:rosterver` | STRING | roster version (integer, absent = 0) |
//! | `{prefix}{user}:offline` | LIST | stored stanzas as raw bytes, oldest first |
//! | `{prefix}{user}:doc` | HASH | document key → raw bytes |
//! | `{prefix}accounts` | SET | index of account names, for [`AccountStore::list_accounts`] |
//!
//! `{user}` is the bare JID as given by the caller, with `%`, `{` and `}` percent-encoded
//! (`%25`, `%7B`, `%7D`) so a JID cannot end the hash tag early. The prefix may not contain braces,
//! for the same reason. Serialization matches the embedded backend: JSON for credentials and
//! roster items, raw bytes for stanzas and documents.
//!
//! # Atomicity
//!
//! Per-user operations are atomic on the user's slot: `create_account` is `SET NX`,
//! `set_credentials` is `SET XX`, and the roster (item write plus version bump, and the
//! read of items with their version), offline (bounded push, take) and account removal are Lua
//! scripts.
//!
//! The accounts index lives on another slot, so creating and removing an account touch two
//! slots and cannot be one transaction in a cluster. The per-user `acct` key is the truth and the
//! index is kept a superset of it:
//! - `create_account` adds to the index, then `SET NX`es the account, then adds to the index again
//!   (a crash between the steps leaves at worst an index entry with no account);
//! - `remove_account` deletes the user's keys, removes the index entry, then re-adds it if the
//!   account exists again (a concurrent create won);
//! - `list_accounts` returns only index entries whose `acct` key exists, and drops the others from
//!   the index with the same remove-then-recheck step, so a concurrent create is never lost.
//!
//! # Connections
//!
//! Idle connections are kept in a small pool; each call takes one (or opens one) and puts it back
//! unless it failed at the connection level, in which case the whole pool is dropped (after a
//! server restart every pooled connection is dead) and the next call reconnects. Read-only and
//! idempotent calls retry once on a fresh connection when a pooled one turns out dead; other
//! writes do not, since the server may have applied them. Connecting and each reply are bounded by
//! [`IO_TIMEOUT`]. Every failure is a [`StoreError::Backend`] naming the operation.

use crate::codec::{decode_credentials, encode_credentials};
use crate::{AccountStore, Backend, DocumentStore, OfflineStore, RosterStore, StoreError, StoreResult};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConnection};
use redis::{ConnectionLike, RedisError, Script, Value};
use starling_xmpp::roster::RosterItem;
use starling_xmpp::sasl::ScramCredentials;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// The key prefix used when the configuration names none.
pub const DEFAULT_PREFIX: &str = "starling:";

/// Bound on connecting to a server and on waiting for each reply.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle connections kept for reuse; more are opened under load and closed after use.
const POOL_IDLE_MAX: usize = 8;

/// Lua: `KEYS[1]` roster hash, `KEYS[2]` version; `ARGV[1]` contact, `ARGV[2]` item JSON.
const PUT_ROSTER_ITEM: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return redis.call('INCR', KEYS[2])
";

/// Lua: `KEYS[1]` roster hash, `KEYS[2]` version; `ARGV[1]` contact. Nil if there was no item.
const REMOVE_ROSTER_ITEM: &str = r"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return false
end
return redis.call('INCR', KEYS[2])
";

/// Lua: `KEYS[1]` roster hash, `KEYS[2]` version. `{version, {contact, item, ...}}` in one snapshot.
const ROSTER: &str = r"
local ver = redis.call('GET', KEYS[2]) or '0'
return {ver, redis.call('HGETALL', KEYS[1])}
";

/// Lua: `KEYS[1]` offline list; `ARGV[1]` stanza, `ARGV[2]` max. 1 if stored, 0 if full.
const PUSH_OFFLINE: &str = r"
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('RPUSH', KEYS[1], ARGV[1])
return 1
";

/// Lua: `KEYS[1]` offline list. All stanzas, oldest first, and the list is gone.
const TAKE_OFFLINE: &str = r"
local all = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return all
";

/// Lua: `KEYS[1]` account, `KEYS[2..]` the user's other keys. 1 if the account existed.
const REMOVE_USER: &str = r"
local existed = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
return existed
";

/// The Lua scripts, hashed once; invoked by `EVALSHA` with a `SCRIPT LOAD` fallback (which a
/// cluster connection sends to every primary).
struct Scripts {
    put_roster_item: Script,
    remove_roster_item: Script,
    roster: Script,
    push_offline: Script,
    take_offline: Script,
    remove_user: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            put_roster_item: Script::new(PUT_ROSTER_ITEM),
            remove_roster_item: Script::new(REMOVE_ROSTER_ITEM),
            roster: Script::new(ROSTER),
            push_offline: Script::new(PUSH_OFFLINE),
            take_offline: Script::new(TAKE_OFFLINE),
            remove_user: Script::new(REMOVE_USER),
        }
    }
}

/// A single server or a cluster.
enum Client {
    Single(redis::Client),
    Cluster(Box<ClusterClient>),
}

/// One connection of either kind.
enum Conn {
    Single(redis::Connection),
    /// Boxed: it is four times the size of a single connection.
    Cluster(Box<ClusterConnection>),
}

impl Conn {
    fn as_dyn(&mut self) -> &mut dyn ConnectionLike {
        match self {
            Conn::Single(c) => c,
            Conn::Cluster(c) => c.as_mut(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Conn::Single(c) => c.is_open(),
            Conn::Cluster(c) => c.is_open(),
        }
    }
}

/// Whether a call may be sent again after a connection failure (the server may have run it).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    Once,
    Never,
}

/// Every store on Redis (one server, or a Redis Cluster). See the [module docs](self) for the
/// key layout and consistency rules.
pub struct RedisStore {
    client: Client,
    /// Idle connections.
    pool: Mutex<Vec<Conn>>,
    prefix: String,
    scripts: Scripts,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("cluster", &self.is_cluster())
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Wraps a Redis error as a backend error naming the operation.
fn rerr(op: &'static str) -> impl Fn(RedisError) -> StoreError {
    move |e| StoreError::Backend(format!("redis {op}: {e}"))
}

/// A decoding error as a backend error naming the operation.
fn derr<E: std::fmt::Display>(op: &'static str) -> impl Fn(E) -> StoreError {
    move |e| StoreError::Backend(format!("redis {op}: bad stored value: {e}"))
}

/// Whether the connection that returned `e` must be discarded.
fn connection_failed(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error()
}

/// Splits a `cluster=` flag off a URL's query string: returns the URL without it and the flag.
fn take_cluster_flag(url: &str) -> (String, bool) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), false);
    };
    let mut cluster = false;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("cluster", v)) => cluster = matches!(v, "true" | "1" | "yes"),
            None if pair == "cluster" => cluster = true,
            _ => rest.push(pair),
        }
    }
    if rest.is_empty() {
        (base.to_owned(), cluster)
    } else {
        (format!("{base}?{}", rest.join("&")), cluster)
    }
}

/// The user as it appears inside the hash tag: `%`, `{`, `}` percent-encoded.
fn tag(user: &str) -> String {
    let mut out = String::with_capacity(user.len() + 2);
    for c in user.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
    out
}

/// Decodes a `[k1, v1, k2, v2, ...]` reply into pairs.
fn pairs(op: &'static str, flat: Vec<Vec<u8>>) -> StoreResult<Vec<(String, Vec<u8>)>> {
    if !flat.len().is_multiple_of(2) {
        return Err(StoreError::Backend(format!("redis {op}: odd-length hash reply")));
    }
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((String::from_utf8(k).map_err(derr(op))?, v));
    }
    Ok(out)
}

impl RedisStore {
    /// Connect to Redis and check that it answers.
    ///
    /// `urls` are `redis://[user:password@]host:port[/db]` (TLS, `rediss://`, is not built in).
    /// One URL is a single server, unless it carries the query flag
    /// `cluster=true`; more than one URL, or any URL with that flag, are seed nodes of a Redis
    /// Cluster (which has only database 0). `prefix` starts every key ([`DEFAULT_PREFIX`] if the
    /// configuration names none) and may not contain `{` or `}`.
    pub fn open(urls: &[String], prefix: &str) -> StoreResult<RedisStore> {
        if prefix.contains(['{', '}']) {
            return Err(StoreError::Backend(format!(
                "redis: key prefix {prefix:?} may not contain '{{' or '}}' (they would break the per-user hash tag)"
            )));
        }
        if urls.is_empty() {
            return Err(StoreError::Backend("redis: no server URL given".into()));
        }
        let parsed: Vec<(String, bool)> = urls.iter().map(|u| take_cluster_flag(u)).collect();
        let cluster = parsed.len() > 1 || parsed.iter().any(|(_, c)| *c);
        let urls: Vec<String> = parsed.into_iter().map(|(u, _)| u).collect();
        let client = if cluster {
            ClusterClientBuilder::new(urls.iter().map(String::as_str))
                .connection_timeout(IO_TIMEOUT)
                .response_timeout(IO_TIMEOUT)
                .build()
                .map(|c| Client::Cluster(Box::new(c)))
        } else {
            redis::Client::open(urls[0].as_str()).map(Client::Single)
        }
        .map_err(|e| StoreError::Backend(format!("redis: bad server URL {:?}: {e}", urls.join(", "))))?;
        let store = RedisStore {
            client,
            pool: Mutex::new(Vec::new()),
            prefix: prefix.to_owned(),
            scripts: Scripts::new(),
        };
        // Fail at startup, not at the first login, if the server is unreachable.
        store.run("connect", Retry::Never, |c| redis::cmd("PING").query::<String>(c).map(drop))?;
        Ok(store)
    }

    /// Whether this store talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.client, Client::Cluster(_))
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, user: &str, what: &str) -> String {
        format!("{}{{{}}}:{what}", self.prefix, tag(user))
    }

    fn index_key(&self) -> String {
        format!("{}accounts", self.prefix)
    }

    fn pool(&self) -> MutexGuard<'_, Vec<Conn>> {
        // A panic while holding the lock cannot leave the Vec inconsistent.
        self.pool.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn connect(&self) -> Result<Conn, RedisError> {
        match &self.client {
            Client::Single(client) => {
                let c = client.get_connection_with_timeout(IO_TIMEOUT)?;
                c.set_read_timeout(Some(IO_TIMEOUT))?;
                c.set_write_timeout(Some(IO_TIMEOUT))?;
                Ok(Conn::Single(c))
            }
            Client::Cluster(client) => Ok(Conn::Cluster(Box::new(client.get_connection()?))),
        }
    }

    /// Runs `f` on a pooled (or new) connection, returning it to the pool unless it failed.
    fn with_conn<T>(
        &self,
        f: &mut dyn FnMut(&mut Conn) -> Result<T, RedisError>,
        retry: Retry,
    ) -> Result<T, RedisError> {
        let pooled = self.pool().pop();
        let was_pooled = pooled.is_some();
        let mut conn = match pooled {
            Some(c) => c,
            None => self.connect()?,
        };
        match f(&mut conn) {
            Ok(v) => {
                self.give_back(conn);
                Ok(v)
            }
            Err(e) if connection_failed(&e) || !conn.is_open() => {
                // The server probably went away: every idle connection is suspect.
                drop(conn);
                self.pool().clear();
                if was_pooled && retry == Retry::Once {
                    let mut fresh = self.connect()?;
                    let v = f(&mut fresh)?;
                    self.give_back(fresh);
                    Ok(v)
                } else {
                    Err(e)
                }
            }
            Err(e) => {
                // A command error (wrong type, script error): the connection itself is fine.
                self.give_back(conn);
                Err(e)
            }
        }
    }

    fn give_back(&self, conn: Conn) {
        if conn.is_open() {
            let mut pool = self.pool();
            if pool.len() < POOL_IDLE_MAX {
                pool.push(conn);
            }
        }
    }

    /// [`Self::with_conn`] for a call that needs only the generic connection interface.
    fn run<T>(
        &self,
        op: &'static str,
        retry: Retry,
        mut f: impl FnMut(&mut dyn ConnectionLike) -> Result<T, RedisError>,
    ) -> StoreResult<T> {
        self.with_conn(&mut |c| f(c.as_dyn()), retry).map_err(rerr(op))
    }

    /// Which of `keys` exist, in one pipeline (split per node on a cluster).
    fn exists_many(&self, op: &'static str, keys: &[String]) -> StoreResult<Vec<bool>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.with_conn(
            &mut |c| match c {
                Conn::Single(c) => {
                    let mut p = redis::pipe();
                    for k in keys {
                        p.cmd("EXISTS").arg(k);
                    }
                    p.query::<Vec<bool>>(c)
                }
                Conn::Cluster(c) => {
                    let mut p = redis::cluster::cluster_pipe();
                    for k in keys {
                        p.cmd("EXISTS").arg(k);
                    }
                    p.query::<Vec<bool>>(c.as_mut())
                }
            },
            Retry::Once,
        )
        .map_err(rerr(op))
    }

    fn index_add(&self, op: &'static str, user: &str) -> StoreResult<()> {
        let index = self.index_key();
        self.run(op, Retry::Once, |c| redis::cmd("SADD").arg(&index).arg(user).query::<i64>(c).map(drop))
    }

    /// Drops index entries, then re-adds those whose account exists again (a concurrent create),
    /// so that an account written before or during this call is never left out of the index.
    fn index_remove(&self, op: &'static str, users: &[String]) -> StoreResult<Vec<String>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let index = self.index_key();
        self.run(op, Retry::Once, |c| redis::cmd("SREM").arg(&index).arg(users).query::<i64>(c).map(drop))?;
        let keys: Vec<String> = users.iter().map(|u| self.key(u, "acct")).collect();
        let back: Vec<String> = users
            .iter()
            .zip(self.exists_many(op, &keys)?)
            .filter(|(_, exists)| *exists)
            .map(|(u, _)| u.clone())
            .collect();
        if !back.is_empty() {
            self.run(op, Retry::Once, |c| {
                redis::cmd("SADD").arg(&index).arg(&back).query::<i64>(c).map(drop)
            })?;
        }
        Ok(back)
    }
}

/// Every call is a network round trip.
impl Backend for RedisStore {}

impl AccountStore for RedisStore {
    fn create_account(&self, user: &str, creds: Vec<ScramCredentials>) -> StoreResult<()> {
        const OP: &str = "create_account";
        let bytes = encode_credentials(&creds).map_err(derr(OP))?;
        let key = self.key(user, "acct");
        // Index first: a crash after this leaves an entry with no account, which is ignored.
        self.index_add(OP, user)?;
        let set = self.run(OP, Retry::Never, |c| {
            redis::cmd("SET").arg(&key).arg(bytes.as_slice()).arg("NX").query::<Value>(c)
        })?;
        if set == Value::Nil {
            return Err(StoreError::AccountExists);
        }
        // Again, in case a concurrent remove_account dropped the entry between the two steps.
        self.index_add(OP, user)
    }

    fn set_credentials(&self, user: &str, creds: Vec<ScramCredentials>) -> StoreResult<()> {
        const OP: &str = "set_credentials";
        let bytes = encode_credentials(&creds).map_err(derr(OP))?;
        let key = self.key(user, "acct");
        let set = self.run(OP, Retry::Once, |c| {
            redis::cmd("SET").arg(&key).arg(bytes.as_slice()).arg("XX").query::<Value>(c)
        })?;
        if set == Value::Nil {
            return Err(StoreError::NoSuchAccount);
        }
        Ok(())
    }

    fn credentials(&self, user: &str) -> StoreResult<Option<Vec<ScramCredentials>>> {
        const OP: &str = "credentials";
        let key = self.key(user, "acct");
        let raw = self.run(OP, Retry::Once, |c| redis::cmd("GET").arg(&key).query::<Option<Vec<u8>>>(c))?;
        match raw {
            None => Ok(None),
            Some(bytes) => decode_credentials(&bytes).map(Some).map_err(derr(OP)),
        }
    }

    fn remove_account(&self, user: &str) -> StoreResult<bool> {
        const OP: &str = "remove_account";
        let keys = ["acct", "roster", "rosterver", "offline", "doc"].map(|k| self.key(user, k));
        let existed = self.run(OP, Retry::Never, |c| {
            let mut inv = self.scripts.remove_user.prepare_invoke();
            for k in &keys {
                inv.key(k);
            }
            inv.invoke::<i64>(c)
        })?;
        self.index_remove(OP, &[user.to_owned()])?;
        Ok(existed > 0)
    }

    fn list_accounts(&self) -> StoreResult<Vec<String>> {
        const OP: &str = "list_accounts";
        let index = self.index_key();
        let mut users =
            self.run(OP, Retry::Once, |c| redis::cmd("SMEMBERS").arg(&index).query::<Vec<String>>(c))?;
        let keys: Vec<String> = users.iter().map(|u| self.key(u, "acct")).collect();
        let exists = self.exists_many(OP, &keys)?;
        let mut ghosts = Vec::new();
        let mut live = Vec::with_capacity(users.len());
        for (user, exists) in users.drain(..).zip(exists) {
            if exists {
                live.push(user);
            } else {
                ghosts.push(user);
            }
        }
        // Repair: entries left by an interrupted create or remove.
        live.extend(self.index_remove(OP, &ghosts)?);
        live.sort();
        Ok(live)
    }
}

impl RosterStore for RedisStore {
    fn roster(&self, user: &str) -> StoreResult<(u64, Vec<RosterItem>)> {
        const OP: &str = "roster";
        let (hash, ver) = (self.key(user, "roster"), self.key(user, "rosterver"));
        let (ver, flat) = self.run(OP, Retry::Once, |c| {
            self.scripts.roster.key(&hash).key(&ver).invoke::<(u64, Vec<Vec<u8>>)>(c)
        })?;
        let mut rows = pairs(OP, flat)?;
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let items = rows
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(derr(OP)))
            .collect::<StoreResult<Vec<RosterItem>>>()?;
        Ok((ver, items))
    }

    fn roster_item(&self, user: &str, contact: &str) -> StoreResult<Option<RosterItem>> {
        const OP: &str = "roster_item";
        let hash = self.key(user, "roster");
        let raw = self.run(OP, Retry::Once, |c| {
            redis::cmd("HGET").arg(&hash).arg(contact).query::<Option<Vec<u8>>>(c)
        })?;
        match raw {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(derr(OP)),
        }
    }

    fn put_roster_item(&self, user: &str, item: &RosterItem) -> StoreResult<u64> {
        const OP: &str = "put_roster_item";
        let bytes = serde_json::to_vec(item).map_err(derr(OP))?;
        let (hash, ver) = (self.key(user, "roster"), self.key(user, "rosterver"));
        self.run(OP, Retry::Never, |c| {
            self.scripts
                .put_roster_item
                .key(&hash)
                .key(&ver)
                .arg(item.jid.as_str())
                .arg(bytes.as_slice())
                .invoke::<u64>(c)
        })
    }

    fn remove_roster_item(&self, user: &str, contact: &str) -> StoreResult<Option<u64>> {
        const OP: &str = "remove_roster_item";
        let (hash, ver) = (self.key(user, "roster"), self.key(user, "rosterver"));
        self.run(OP, Retry::Never, |c| {
            self.scripts.remove_roster_item.key(&hash).key(&ver).arg(contact).invoke::<Option<u64>>(c)
        })
    }
}

impl OfflineStore for RedisStore {
    fn push_offline(&self, user: &str, stanza: &[u8], max: usize) -> StoreResult<bool> {
        const OP: &str = "push_offline";
        let list = self.key(user, "offline");
        // Lua numbers are doubles; any bound past 2^53 means "unbounded" in practice.
        let max = u64::try_from(max).unwrap_or(u64::MAX).min(1 << 53);
        let stored = self.run(OP, Retry::Never, |c| {
            self.scripts.push_offline.key(&list).arg(stanza).arg(max).invoke::<i64>(c)
        })?;
        Ok(stored == 1)
    }

    fn take_offline(&self, user: &str) -> StoreResult<Vec<Vec<u8>>> {
        const OP: &str = "take_offline";
        let list = self.key(user, "offline");
        self.run(OP, Retry::Never, |c| self.scripts.take_offline.key(&list).invoke::<Vec<Vec<u8>>>(c))
    }

    fn count_offline(&self, user: &str) -> StoreResult<usize> {
        const OP: &str = "count_offline";
        let list = self.key(user, "offline");
        self.run(OP, Retry::Once, |c| redis::cmd("LLEN").arg(&list).query::<usize>(c))
    }
}

impl DocumentStore for RedisStore {
    fn document(&self, user: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
        const OP: &str = "document";
        let hash = self.key(user, "doc");
        self.run(OP, Retry::Once, |c| redis::cmd("HGET").arg(&hash).arg(key).query::<Option<Vec<u8>>>(c))
    }

    fn set_document(&self, user: &str, key: &str, value: Option<&[u8]>) -> StoreResult<()> {
        const OP: &str = "set_document";
        let hash = self.key(user, "doc");
        self.run(OP, Retry::Once, |c| match value {
            Some(v) => redis::cmd("HSET").arg(&hash).arg(key).arg(v).query::<i64>(c).map(drop),
            None => redis::cmd("HDEL").arg(&hash).arg(key).query::<i64>(c).map(drop),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_flag_is_split_off_the_url() {
        assert_eq!(take_cluster_flag("redis://h:1/0"), ("redis://h:1/0".into(), false));
        assert_eq!(take_cluster_flag("redis://h:1/?cluster=true"), ("redis://h:1/".into(), true));
        assert_eq!(take_cluster_flag("redis://h:1/?cluster"), ("redis://h:1/".into(), true));
        assert_eq!(take_cluster_flag("redis://h:1/?cluster=false"), ("redis://h:1/".into(), false));
        assert_eq!(
            take_cluster_flag("redis://h:1/?protocol=resp2&cluster=1"),
            ("redis://h:1/?protocol=resp2".into(), true)
        );
    }

    #[test]
    fn tags_cannot_close_the_hash_tag() {
        assert_eq!(tag("a@d"), "a@d");
        assert_eq!(tag("}a{%@d"), "%7Da%7B%25@d");
    }

    #[test]
    fn braces_in_the_prefix_are_refused_before_connecting() {
        let e = RedisStore::open(&["redis://127.0.0.1:1/".to_owned()], "x{y}:").unwrap_err();
        assert!(e.to_string().contains("prefix"), "{e}");
        let e = RedisStore::open(&[], DEFAULT_PREFIX).unwrap_err();
        assert!(e.to_string().contains("no server URL"), "{e}");
    }
}
