//! The Redis presence bus: [`starling_router::PresenceBus`] over Redis pub/sub.
//!
//! - **Channels.** One per account, `{prefix}{<bare JID>}:presence`: the hash tag puts the
//!   channel (and the account's last-presence key) in the account's Redis Cluster slot. On a
//!   Redis Cluster the bus uses sharded pub/sub (`SSUBSCRIBE`/`SPUBLISH`, RESP3), so a message
//!   travels only within the shard that owns the slot; on a single server it uses `SUBSCRIBE`/
//!   `PUBLISH`, which is the same thing there (see `docs/decisions/0006-presence-bus.md`).
//! - **Interest.** The router subscribes to a contact's channel when its first local user
//!   becomes interested and unsubscribes when the last one stops ([`PresenceBus::watch`]).
//! - **Messages.** The publishing router's node id (8 bytes, big-endian) followed by the
//!   presence stanza as self-contained XML. A router ignores its own messages: it delivered to
//!   its local subscribers itself.
//! - **Last presence.** `{prefix}{<bare JID>}:presence` is also a hash, resource → stanza, with a
//!   TTL the publishing router refreshes every third of it. An unavailable presence deletes the
//!   resource's field; a router that dies without cleaning up leaves entries that expire. A
//!   login's contacts are read in one pipelined round per Redis node (see `read_last`).
//! - **Trouble.** Every Redis call happens on one background task; the trait's methods only
//!   record what they are asked and queue it, so nothing on the router's path waits for Redis.
//!   While Redis is unreachable the bus reports `starling_redis_up 0`, logs, answers
//!   [`PresenceBus::current`] with nothing, and retries with backoff; once it is back it
//!   subscribes to every channel of interest again and republishes every local last presence.
//!   A channel the server unsubscribes us from (a slot migrating on a Redis Cluster, or a
//!   master handing over to its replica with `CLUSTER FAILOVER`) is subscribed again at once,
//!   which reaches the slot's new owner. A master that dies drops the connection: the bus
//!   reconnects and resynchronises as above, retrying until the cluster has promoted the replica
//!   (cluster-node-timeout plus an election), then presence flows again by itself.

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind, RedisResult, Value};
use starling_router::{BoxFuture, PresenceBus};
use starling_xml::Element;
use starling_xmpp::FullJid;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Bus settings.
#[derive(Clone, Debug)]
pub struct BusConfig {
    /// Redis URLs, as for the Redis store: one for a single server (unless it carries
    /// `cluster=true`), several for the seed nodes of a Redis Cluster.
    pub urls: Vec<String>,
    /// Start of every channel and key (no braces).
    pub prefix: String,
    /// This router's node id (stamped on published messages).
    pub node_id: u64,
    /// Lifetime of a last-presence entry not refreshed by its router.
    pub ttl: Duration,
}

/// Why the bus could not be created.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The configuration is unusable.
    #[error("presence bus: {0}")]
    Config(String),
}

/// What the router asked for, in order, for the Redis task.
enum Op {
    Subscribe(String),
    Unsubscribe(String),
    Publish { channel: String, resource: String, payload: Vec<u8>, available: bool },
    Read(Vec<String>, oneshot::Sender<Vec<Element>>),
}

/// What the bus holds regardless of Redis: replayed after every reconnect.
#[derive(Default)]
struct State {
    /// Channels of interest.
    channels: HashSet<String>,
    /// Local last presences: channel → resource → message payload (without the node id).
    published: HashMap<String, HashMap<String, Vec<u8>>>,
    /// Unavailable presences not yet published (Redis was down): sent after reconnecting, so
    /// other routers learn who left meanwhile. (channel, resource) → payload.
    departed: HashMap<(String, String), Vec<u8>>,
    /// Channels to subscribe to again: the server dropped them (a slot migrated) or a
    /// subscription failed (the cluster's slot map was stale). Retried every 200 ms.
    resubscribe: HashSet<String>,
}

/// The Redis presence bus. Cheap to share behind an `Arc`.
pub struct RedisBus {
    cfg: BusConfig,
    state: Arc<Mutex<State>>,
    ops: mpsc::UnboundedSender<Op>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where the bus connects: one server, or the seed nodes of a Redis Cluster (RESP3 URLs; the
/// cluster client is built per connection because it takes the push sender at build time).
enum Target {
    Single(redis::Client),
    Cluster(Vec<String>),
}

impl RedisBus {
    /// Start the bus; presences other routers publish arrive on the returned receiver (feed
    /// them to `Router::on_bus_presence`). Needs a tokio runtime.
    pub fn start(cfg: BusConfig) -> Result<(Arc<RedisBus>, mpsc::UnboundedReceiver<Element>), BusError> {
        if cfg.prefix.contains(['{', '}']) {
            return Err(BusError::Config(format!("the key prefix {:?} may not contain braces", cfg.prefix)));
        }
        let target = target(&cfg.urls)?;
        let (ops, rx) = mpsc::unbounded_channel();
        let (out, inbox) = mpsc::unbounded_channel();
        let state = Arc::new(Mutex::new(State::default()));
        let bus = Arc::new(RedisBus { cfg: cfg.clone(), state: state.clone(), ops });
        tokio::spawn(run(cfg, target, state, rx, out));
        Ok((bus, inbox))
    }

    fn channel(&self, bare: &str) -> String {
        channel_of(&self.cfg.prefix, bare)
    }

    fn queue(&self, op: Op) {
        // The task ends only with the runtime; a send that fails then has nobody to serve.
        let _ = self.ops.send(op);
    }
}

/// The channel (and last-presence key) of an account.
pub fn channel_of(prefix: &str, bare: &str) -> String {
    let tag: String = bare
        .chars()
        .flat_map(|c| match c {
            '%' => "%25".chars().collect::<Vec<_>>(),
            '{' => "%7B".chars().collect(),
            '}' => "%7D".chars().collect(),
            c => vec![c],
        })
        .collect();
    format!("{prefix}{{{tag}}}:presence")
}

fn target(urls: &[String]) -> Result<Target, BusError> {
    let resp3 = |u: &str| {
        let (base, query) = u.split_once('?').unwrap_or((u, ""));
        let mut params: Vec<&str> = query
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("cluster=") && !p.starts_with("protocol="))
            .collect();
        params.push("protocol=resp3");
        format!("{base}?{}", params.join("&"))
    };
    let cluster = urls.len() > 1 || urls.iter().any(|u| u.contains("cluster=true"));
    match (urls.first(), cluster) {
        (None, _) => Err(BusError::Config("no Redis URL".into())),
        (Some(u), false) => {
            redis::Client::open(resp3(u)).map(Target::Single).map_err(|e| BusError::Config(e.to_string()))
        }
        (Some(_), true) => {
            let urls: Vec<String> = urls.iter().map(|u| resp3(u)).collect();
            redis::cluster::ClusterClientBuilder::new(urls.clone())
                .use_protocol(redis::ProtocolVersion::RESP3)
                .build()
                .map_err(|e| BusError::Config(e.to_string()))?;
            Ok(Target::Cluster(urls))
        }
    }
}

impl PresenceBus for RedisBus {
    fn distributes(&self) -> bool {
        true
    }

    fn publish(&self, from: &FullJid, presence: &Element) {
        let channel = self.channel(&from.to_bare().to_string());
        let resource = from.resource().as_str().to_owned();
        let available = presence.attr("type").is_none();
        let payload = presence.to_bytes();
        {
            let mut st = lock(&self.state);
            let key = (channel.clone(), resource.clone());
            if available {
                st.departed.remove(&key);
                st.published.entry(channel.clone()).or_default().insert(resource.clone(), payload.clone());
            } else {
                st.departed.insert(key, payload.clone());
                if let Some(r) = st.published.get_mut(&channel) {
                    r.remove(&resource);
                    if r.is_empty() {
                        st.published.remove(&channel);
                    }
                }
            }
        }
        self.queue(Op::Publish { channel, resource, payload, available });
    }

    fn watch(&self, contact: &str) {
        let channel = self.channel(contact);
        if lock(&self.state).channels.insert(channel.clone()) {
            self.queue(Op::Subscribe(channel));
        }
    }

    fn unwatch(&self, contact: &str) {
        let channel = self.channel(contact);
        if lock(&self.state).channels.remove(&channel) {
            self.queue(Op::Unsubscribe(channel));
        }
    }

    fn forget(&self, bare: &str) {
        let channel = self.channel(bare);
        let mut st = lock(&self.state);
        st.published.remove(&channel);
        st.departed.retain(|(c, _), _| *c != channel);
    }

    fn current(&self, contacts: Vec<String>) -> BoxFuture<'_, Vec<Element>> {
        Box::pin(async move {
            let keys: Vec<String> = contacts.iter().map(|c| self.channel(c)).collect();
            let (tx, rx) = oneshot::channel();
            self.queue(Op::Read(keys, tx));
            // A degraded bus answers at once with nothing; a slow one must not hold a login.
            tokio::time::timeout(Duration::from_secs(2), rx)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
        })
    }
}

/// A connection of either kind, and the pushes it receives.
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> RedisResult<T> {
        match self {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => cmd.query_async(c).await,
        }
    }

    async fn subscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Conn::Single(c) => c.subscribe(channel).await,
            Conn::Cluster(c) => c.ssubscribe(channel).await,
        }
    }

    async fn unsubscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Conn::Single(c) => c.unsubscribe(channel).await,
            Conn::Cluster(c) => c.sunsubscribe(channel).await,
        }
    }

    async fn publish(&mut self, channel: &str, message: &[u8]) -> RedisResult<()> {
        let verb = if matches!(self, Conn::Cluster(_)) { "SPUBLISH" } else { "PUBLISH" };
        self.query::<i64>(redis::cmd(verb).arg(channel).arg(message)).await.map(|_| ())
    }
}

async fn connect(target: &Target) -> RedisResult<(Conn, mpsc::UnboundedReceiver<PushInfo>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let conn = match target {
        Target::Single(client) => {
            let cfg = AsyncConnectionConfig::new()
                .set_push_sender(tx)
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(2)));
            Conn::Single(client.get_multiplexed_async_connection_with_config(&cfg).await?)
        }
        Target::Cluster(urls) => {
            let client = redis::cluster::ClusterClientBuilder::new(urls.clone())
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(tx)
                .connection_timeout(Duration::from_secs(2))
                .response_timeout(Duration::from_secs(2))
                .build()?;
            Conn::Cluster(client.get_async_connection().await?)
        }
    };
    Ok((conn, rx))
}

fn gauge_up(up: bool) {
    starling_telemetry::metrics().redis_up.set(i64::from(up));
}

fn count_error() {
    starling_telemetry::metrics().redis_errors.inc();
}

/// The Redis task: connect, replay the state, then serve queued operations and pushes until the
/// connection fails; repeat with backoff.
async fn run(
    cfg: BusConfig,
    target: Target,
    state: Arc<Mutex<State>>,
    mut ops: mpsc::UnboundedReceiver<Op>,
    out: mpsc::UnboundedSender<Element>,
) {
    let ttl = cfg.ttl.max(Duration::from_secs(3));
    let mut backoff = Duration::from_millis(100);
    gauge_up(false);
    loop {
        match connect(&target).await {
            Ok((mut conn, mut pushes)) => {
                match resync(&cfg, &mut conn, &state, &out, ttl).await {
                    Ok(n) => {
                        gauge_up(true);
                        backoff = Duration::from_millis(100);
                        tracing::info!(channels = n, "presence bus: connected to Redis");
                        serve(&cfg, &mut conn, &mut pushes, &mut ops, &state, &out, ttl).await;
                    }
                    Err(e) => {
                        count_error();
                        tracing::warn!(error = %e, "presence bus: could not resubscribe");
                    }
                }
                gauge_up(false);
                tracing::warn!("presence bus: Redis connection lost; presence degraded until it is back");
            }
            Err(e) => {
                count_error();
                tracing::warn!(error = %e, "presence bus: Redis unreachable");
            }
        }
        // Degraded: keep the queue moving (the state already records everything) and retry.
        let until = tokio::time::Instant::now() + backoff;
        loop {
            match tokio::time::timeout_at(until, ops.recv()).await {
                Ok(Some(Op::Read(_, reply))) => {
                    let _ = reply.send(Vec::new());
                }
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(_) => break,
            }
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// After (re)connecting: subscribe to every channel of interest, then publish every local
/// presence again — the departures first, then the current ones, on the channels and in the
/// cache — so that routers which missed changes while Redis was away catch up.
///
/// Then read the last presences of every watched channel and deliver them: a change another
/// router republished before this one subscribed again is in the cache (it writes the cache
/// before it publishes, and this router reads after it subscribed), so no change is missed.
async fn resync(
    cfg: &BusConfig,
    conn: &mut Conn,
    state: &Mutex<State>,
    out: &mpsc::UnboundedSender<Element>,
    ttl: Duration,
) -> RedisResult<usize> {
    let channels: Vec<String> = lock(state).channels.iter().cloned().collect();
    for c in &channels {
        conn.subscribe(c).await?;
    }
    let departed: Vec<((String, String), Vec<u8>)> =
        lock(state).departed.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for ((channel, resource), payload) in departed {
        conn.query::<i64>(redis::cmd("HDEL").arg(&channel).arg(&resource)).await?;
        conn.publish(&channel, &message(cfg, &payload)).await?;
        lock(state).departed.remove(&(channel, resource));
    }
    refresh(conn, state, ttl).await?;
    let current: Vec<(String, Vec<u8>)> = lock(state)
        .published
        .iter()
        .flat_map(|(c, r)| r.values().map(move |p| (c.clone(), p.clone())))
        .collect();
    for (channel, payload) in current {
        conn.publish(&channel, &message(cfg, &payload)).await?;
    }
    let (last, failed) = read_last(conn, &channels).await;
    for p in last {
        let _ = out.send(p);
    }
    if let Some(e) = failed {
        return Err(e);
    }
    starling_telemetry::metrics().redis_subscriptions.set(channels.len() as i64);
    Ok(channels.len())
}

/// Re-write every local last presence with a fresh TTL.
async fn refresh(conn: &mut Conn, state: &Mutex<State>, ttl: Duration) -> RedisResult<()> {
    let published: Vec<(String, HashMap<String, Vec<u8>>)> =
        lock(state).published.iter().map(|(k, r)| (k.clone(), r.clone())).collect();
    for (key, resources) in published {
        for (resource, payload) in resources {
            conn.query::<i64>(redis::cmd("HSET").arg(&key).arg(&resource).arg(&payload)).await?;
        }
        conn.query::<i64>(redis::cmd("EXPIRE").arg(&key).arg(ttl.as_secs())).await?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    cfg: &BusConfig,
    conn: &mut Conn,
    pushes: &mut mpsc::UnboundedReceiver<PushInfo>,
    ops: &mut mpsc::UnboundedReceiver<Op>,
    state: &Mutex<State>,
    out: &mpsc::UnboundedSender<Element>,
    ttl: Duration,
) {
    let mut tick = tokio::time::interval(ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut retry = tokio::time::interval(Duration::from_millis(200));
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let result = tokio::select! {
            op = ops.recv() => match op {
                Some(op) => apply(cfg, conn, state, op, ttl).await,
                None => return,
            },
            push = pushes.recv() => match push {
                Some(p) => on_push(cfg, state, out, p),
                None => return,
            },
            _ = retry.tick() => resubscribe(conn, state).await,
            _ = tick.tick() => {
                let pong = conn.query::<String>(&redis::cmd("PING")).await.map(|_| ());
                match pong {
                    Ok(()) => refresh(conn, state, ttl).await,
                    Err(e) => Err(e),
                }
            }
        };
        starling_telemetry::metrics().redis_subscriptions.set(lock(state).channels.len() as i64);
        if let Err(e) = result {
            count_error();
            tracing::warn!(error = %e, "presence bus: Redis command failed");
            if e.is_connection_dropped() || e.is_io_error() || e.is_timeout() || e.is_unrecoverable_error() {
                return;
            }
        }
    }
}

/// Subscribe again to the channels the server dropped or a subscription failed for.
async fn resubscribe(conn: &mut Conn, state: &Mutex<State>) -> RedisResult<()> {
    let pending: Vec<String> = {
        let mut st = lock(state);
        let dropped = std::mem::take(&mut st.resubscribe);
        dropped.into_iter().filter(|c| st.channels.contains(c)).collect()
    };
    for (i, ch) in pending.iter().enumerate() {
        if let Err(e) = conn.subscribe(ch).await {
            lock(state).resubscribe.extend(pending[i..].iter().cloned());
            return Err(e);
        }
        tracing::info!(channel = %ch, "presence bus: subscribed again");
    }
    Ok(())
}

/// The last presences cached under `keys`, in one pipelined round per Redis node.
///
/// On one server that is one pipeline. On a Redis Cluster an async pipeline must stay within
/// one slot, so the keys are grouped by slot and every group's pipeline is sent at once,
/// without waiting for the others: the cluster client keeps one multiplexed connection per
/// node, so all the groups bound for a node go out back to back and the reads cost one round
/// trip to each node, in parallel, however many contacts there are. A group whose slot moved
/// (migration, failover) is redirected by the client like a single command.
///
/// What could be read is returned even if some group failed; the error is reported alongside.
async fn read_last(conn: &mut Conn, keys: &[String]) -> (Vec<Element>, Option<redis::RedisError>) {
    fn parse(hashes: Vec<HashMap<String, Vec<u8>>>, into: &mut Vec<Element>) {
        let stanzas = hashes.iter().flat_map(HashMap::values);
        into.extend(stanzas.filter_map(|b| starling_xmpp::session::parse_stored_stanza(b).ok()));
    }
    let mut found = Vec::new();
    if keys.is_empty() {
        return (found, None);
    }
    let failed = match conn {
        Conn::Single(c) => match hgetall_pipe(keys).query_async(c).await {
            Ok(hashes) => {
                parse(hashes, &mut found);
                None
            }
            Err(e) => Some(e),
        },
        Conn::Cluster(c) => {
            let mut by_slot: HashMap<redis::cluster_routing::Slot, Vec<String>> = HashMap::new();
            for k in keys {
                by_slot.entry(redis::cluster_routing::Slot::for_key(k)).or_default().push(k.clone());
            }
            // Spawned so that every group is in flight at once; each holds a handle on the
            // same multiplexed cluster connection.
            let mut groups = tokio::task::JoinSet::new();
            for group in by_slot.into_values() {
                let mut c = c.clone();
                groups.spawn(async move { hgetall_pipe(&group).query_async(&mut c).await });
            }
            let mut failed = None;
            while let Some(done) = groups.join_next().await {
                match done {
                    Ok(Ok(hashes)) => parse(hashes, &mut found),
                    Ok(Err(e)) => failed = Some(e),
                    Err(e) => {
                        failed =
                            Some(redis::RedisError::from((redis::ErrorKind::Io, "read task", e.to_string())))
                    }
                }
            }
            failed
        }
    };
    (found, failed)
}

/// `HGETALL` of every key, as one pipeline.
fn hgetall_pipe(keys: &[String]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for k in keys {
        pipe.cmd("HGETALL").arg(k);
    }
    pipe
}

/// A bus message: the publishing router's id, then the stanza.
fn message(cfg: &BusConfig, payload: &[u8]) -> Vec<u8> {
    let mut m = cfg.node_id.to_be_bytes().to_vec();
    m.extend_from_slice(payload);
    m
}

async fn apply(
    cfg: &BusConfig,
    conn: &mut Conn,
    state: &Mutex<State>,
    op: Op,
    ttl: Duration,
) -> RedisResult<()> {
    match op {
        Op::Subscribe(c) => {
            let r = conn.subscribe(&c).await;
            if r.is_err() {
                lock(state).resubscribe.insert(c);
            }
            r
        }
        Op::Unsubscribe(c) => conn.unsubscribe(&c).await,
        Op::Publish { channel, resource, payload, available } => {
            if available {
                conn.query::<i64>(redis::cmd("HSET").arg(&channel).arg(&resource).arg(&payload)).await?;
                conn.query::<i64>(redis::cmd("EXPIRE").arg(&channel).arg(ttl.as_secs())).await?;
            } else {
                conn.query::<i64>(redis::cmd("HDEL").arg(&channel).arg(&resource)).await?;
            }
            conn.publish(&channel, &message(cfg, &payload)).await?;
            if !available {
                lock(state).departed.remove(&(channel, resource));
            }
            Ok(())
        }
        Op::Read(keys, reply) => {
            let (found, failed) = read_last(conn, &keys).await;
            let _ = reply.send(found);
            failed.map_or(Ok(()), Err)
        }
    }
}

/// A push from Redis: a message on a channel, or the server dropping a subscription.
fn on_push(
    cfg: &BusConfig,
    state: &Mutex<State>,
    out: &mpsc::UnboundedSender<Element>,
    push: PushInfo,
) -> RedisResult<()> {
    match push.kind {
        PushKind::Message | PushKind::SMessage => {
            let Some(Value::BulkString(payload)) = push.data.get(1) else { return Ok(()) };
            if payload.len() < 8 {
                return Ok(());
            }
            let (origin, stanza) = payload.split_at(8);
            let origin = u64::from_be_bytes(origin.try_into().unwrap_or([0; 8]));
            if origin == cfg.node_id {
                return Ok(());
            }
            match starling_xmpp::session::parse_stored_stanza(stanza) {
                Ok(p) => {
                    let _ = out.send(p);
                }
                Err(e) => tracing::debug!(error = %e, "presence bus: unparsable message ignored"),
            }
            Ok(())
        }
        // The server dropped a shard channel (its slot migrated, or its node failed over):
        // subscribe again if we still want it; the cluster client finds the new owner.
        PushKind::SUnsubscribe | PushKind::Unsubscribe => {
            let Some(Value::BulkString(ch)) = push.data.first() else { return Ok(()) };
            let ch = String::from_utf8_lossy(ch).into_owned();
            let mut st = lock(state);
            if st.channels.contains(&ch) {
                tracing::info!(channel = %ch, "presence bus: subscription dropped by the server; subscribing again");
                st.resubscribe.insert(ch);
            }
            Ok(())
        }
        PushKind::Disconnection => Err(redis::RedisError::from((redis::ErrorKind::Io, "disconnected"))),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn channels_carry_the_account_as_hash_tag() {
        assert_eq!(channel_of("starling:", "alice@localhost"), "starling:{alice@localhost}:presence");
        assert_eq!(channel_of("p:", "a}b@x"), "p:{a%7Db@x}:presence", "a brace cannot end the tag early");
    }

    #[test]
    fn braces_in_the_prefix_are_refused() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let cfg = BusConfig {
                urls: vec!["redis://127.0.0.1:1".into()],
                prefix: "x{".into(),
                node_id: 1,
                ttl: Duration::from_secs(60),
            };
            assert!(RedisBus::start(cfg).is_err());
        });
    }
}
