//! Configuration: one TOML file (optional) plus `STARLING_*` environment overrides, with
//! defaults that make `starling serve` work on a laptop with no file at all.
//!
//! Every key is documented here and in `docs/configuration.md`. Environment variables name a
//! key path in upper case with `__` between levels: `STARLING_C2S__LISTEN=127.0.0.1:5222`,
//! `STARLING_DOMAINS='["example.org"]'`. A value is read as TOML when it parses as TOML, else
//! as a string.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "STARLING_";

/// The whole configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// XMPP domains this server hosts. Accounts are `user@domain` for each.
    pub domains: Vec<String>,
    /// Directory for the database (`starling.redb`) and the generated TLS certificate.
    pub data_dir: PathBuf,
    /// Threads running connections and routing: 0 for one per core the process may use (its
    /// CPU affinity and cgroup quota count). With one, the runtime is single-threaded, which saves
    /// the cross-thread wake-ups a one-worker pool still pays (see `docs/decisions/0008-runtime.md`).
    pub worker_threads: usize,
    /// Client connections.
    pub c2s: C2sConfig,
    /// TLS certificate. Without one, a self-signed certificate is generated in `data_dir/tls/`.
    pub tls: TlsConfig,
    /// External components (XEP-0114).
    pub components: ComponentsConfig,
    /// In-band registration (XEP-0077).
    pub registration: RegistrationConfig,
    /// Offline message storage (XEP-0160).
    pub offline: OfflineConfig,
    /// Authentication.
    pub auth: AuthConfig,
    /// Logging.
    pub log: LogConfig,
    /// The operator's HTTP endpoint (`/metrics`, `/livez`, `/readyz`).
    pub http: HttpConfig,
    /// Where accounts, rosters, offline messages and documents live.
    pub store: StoreConfig,
    /// The cluster roles (`starling router`, `starling edge`); unused by `serve`.
    pub cluster: ClusterConfig,
    /// Distributed tracing (OpenTelemetry, OTLP).
    pub tracing: TracingConfig,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            domains: vec!["localhost".into()],
            data_dir: PathBuf::from("./starling-data"),
            worker_threads: 0,
            c2s: C2sConfig::default(),
            tls: TlsConfig::default(),
            components: ComponentsConfig::default(),
            registration: RegistrationConfig::default(),
            offline: OfflineConfig::default(),
            auth: AuthConfig::default(),
            log: LogConfig::default(),
            http: HttpConfig::default(),
            store: StoreConfig::default(),
            cluster: ClusterConfig::default(),
            tracing: TracingConfig::default(),
        }
    }
}

/// `[c2s]`: client-to-server listeners and stream limits.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct C2sConfig {
    /// Address for STARTTLS client connections (RFC 6120). Empty disables the listener.
    pub listen: String,
    /// Address for direct-TLS client connections (XEP-0368, ALPN `xmpp-client`). Empty disables it.
    pub direct_tls_listen: String,
    /// Require STARTTLS before authentication. Turning this off alone still keeps SASL away from
    /// unencrypted streams while a certificate is available; see `allow_plaintext_auth`.
    pub starttls_required: bool,
    /// Allow SASL (including PLAIN) and registration on unencrypted streams. Local development only.
    pub allow_plaintext_auth: bool,
    /// Largest stanza in bytes; larger ones close the stream with `<policy-violation/>`.
    pub max_stanza_bytes: usize,
    /// Deepest element nesting within a stanza.
    pub max_depth: usize,
    /// Most attributes on one element.
    pub max_attributes: usize,
    /// Seconds from connect to a bound resource before the connection is dropped.
    pub handshake_timeout_secs: u64,
    /// Seconds without any received byte (whitespace keepalives count) before a session is closed.
    /// Bytes written to the client do not count.
    pub idle_timeout_secs: u64,
    /// Seconds one write to a client (or component) may make no progress before the connection
    /// is dropped: a peer that stops reading cannot hold its session and queue forever.
    pub write_timeout_secs: u64,
    /// Most simultaneous client and component connections.
    pub max_connections: usize,
    /// Stanzas queued towards one session before further ones are refused for it.
    pub session_queue: usize,
}

impl Default for C2sConfig {
    fn default() -> C2sConfig {
        C2sConfig {
            listen: "0.0.0.0:5222".into(),
            direct_tls_listen: "0.0.0.0:5223".into(),
            starttls_required: true,
            allow_plaintext_auth: false,
            max_stanza_bytes: 256 * 1024,
            max_depth: 64,
            max_attributes: 64,
            handshake_timeout_secs: 30,
            idle_timeout_secs: 600,
            write_timeout_secs: 30,
            max_connections: 100_000,
            session_queue: 4096,
        }
    }
}

/// `[tls]`: certificate and key in PEM.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain (PEM). Default: `data_dir/tls/cert.pem`, generated self-signed if missing.
    pub cert: Option<PathBuf>,
    /// Private key (PEM). Default: `data_dir/tls/key.pem`, generated if missing.
    pub key: Option<PathBuf>,
}

/// `[components]`: external components.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComponentsConfig {
    /// Address for component connections. The listener runs only when `secrets` is not empty.
    pub listen: String,
    /// Component domain → shared secret, e.g. `"echo.localhost" = "s3cret"`.
    pub secrets: BTreeMap<String, String>,
    /// Seconds without any received byte before an authenticated component is closed with
    /// `<connection-timeout/>`. 0 (the default): a quiet component is never dropped.
    pub idle_timeout_secs: u64,
}

impl Default for ComponentsConfig {
    fn default() -> ComponentsConfig {
        ComponentsConfig { listen: "127.0.0.1:5347".into(), secrets: BTreeMap::new(), idle_timeout_secs: 0 }
    }
}

/// `[registration]`
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Let anyone create an account from their client (XEP-0077). Off by default.
    pub enabled: bool,
}

/// `[offline]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OfflineConfig {
    /// Most messages stored per offline account; further ones bounce with `service-unavailable`.
    pub max_per_user: usize,
}

impl Default for OfflineConfig {
    fn default() -> OfflineConfig {
        OfflineConfig { max_per_user: 1000 }
    }
}

/// `[auth]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// PBKDF2 iterations for newly stored SCRAM credentials.
    pub scram_iterations: u32,
    /// Failed authentications allowed per client address per minute (0: unlimited).
    pub failures_per_minute: u32,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig { scram_iterations: starling_store::DEFAULT_SCRAM_ITERATIONS, failures_per_minute: 5 }
    }
}

/// `[log]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter: `info`, `debug`, `starling_edge=debug,info`, …
    pub level: String,
    /// `text` for people, `json` for log pipelines.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig { level: "info".into(), format: "text".into() }
    }
}

/// `[http]`: the operator's endpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address serving `/metrics` (Prometheus), `/livez` and `/readyz`. Empty disables it.
    /// Loopback by default: metrics are for the operator, not the Internet.
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig { listen: "127.0.0.1:5280".into() }
    }
}

/// `[tracing]`: OpenTelemetry traces of stanzas' trips, exported over OTLP/gRPC.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    /// OTLP/gRPC collector endpoint (`http://otel-collector:4317`). Empty: no tracing.
    pub otlp_endpoint: String,
    /// Fraction of stanzas whose trip is traced (0.0–1.0); a trip started on another node
    /// follows that node's decision.
    pub sample_ratio: f64,
}

impl Default for TracingConfig {
    fn default() -> TracingConfig {
        TracingConfig { otlp_endpoint: String::new(), sample_ratio: 0.01 }
    }
}

/// `[store]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `embedded` (a redb file in `data_dir`, one process only) or `redis` (shared by every
    /// node of a cluster: any router can own any user).
    pub backend: String,
    /// For `redis`: `redis://[user:password@]host:port[/db]`. One URL is a single server
    /// (unless it carries `?cluster=true`); several are seed nodes of a Redis Cluster.
    pub redis_urls: Vec<String>,
    /// For `redis`: the prefix of every key (no braces).
    pub key_prefix: String,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            backend: "embedded".into(),
            redis_urls: vec!["redis://127.0.0.1:6379".into()],
            key_prefix: starling_store::redis::DEFAULT_PREFIX.into(),
        }
    }
}

/// `[cluster]`: identity, addresses and timings of a cluster node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's id, unique in the cluster. 0 = take it from the host name's trailing number
    /// (a Kubernetes StatefulSet ordinal: `starling-router-0` is node 1, `-1` node 2, …); an
    /// edge takes a hash of its host name instead (a Deployment pod's name is unique).
    pub node_id: u64,
    /// The router's gRPC address (Raft, registry, links). Edges dial routers; they listen on none.
    pub listen: String,
    /// The address other nodes dial to reach this one; empty = `listen` (which must then not be
    /// a wildcard address).
    pub advertise: String,
    /// gRPC addresses of routers: a joining router asks them for the leader, an edge watches the
    /// registry through them. Listing every router (this one included) is fine.
    pub seeds: Vec<String>,
    /// Bootstrap a new cluster when this router has no Raft state. Without it, node 1 bootstraps
    /// only when no seed knows a cluster after `bootstrap_wait_ms`; any other node joins.
    pub bootstrap: bool,
    /// How long node 1 looks for an existing cluster before bootstrapping one.
    pub bootstrap_wait_ms: u64,
    /// Raft heartbeat interval.
    pub heartbeat_ms: u64,
    /// Raft election timeout, lower bound.
    pub election_timeout_min_ms: u64,
    /// Raft election timeout, upper bound.
    pub election_timeout_max_ms: u64,
    /// How often every node reports liveness to the registry leader.
    pub liveness_interval_ms: u64,
    /// A node silent this long is marked down; a router's slots then move to the others.
    pub down_after_ms: u64,
    /// Routers beyond this many stay Raft learners (they own slots all the same).
    pub max_voters: usize,
    /// Envelopes queued towards one peer router before further ones are refused.
    pub router_queue: usize,
    /// Items queued towards one edge, or on an edge towards one router.
    pub edge_queue: usize,
    /// On SIGTERM, how long a router waits for its slots to move away and an edge for its
    /// clients to close, before exiting anyway.
    pub drain_timeout_secs: u64,
    /// Lifetime of a router's last-presence entries in Redis unless it refreshes them (it does,
    /// every third of it); what remains of a router that died without cleaning up.
    pub presence_ttl_secs: u64,
}

impl Default for ClusterConfig {
    fn default() -> ClusterConfig {
        ClusterConfig {
            node_id: 0,
            listen: "127.0.0.1:7400".into(),
            advertise: String::new(),
            seeds: Vec::new(),
            bootstrap: false,
            bootstrap_wait_ms: 3000,
            heartbeat_ms: 200,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            liveness_interval_ms: 500,
            down_after_ms: 3000,
            max_voters: 5,
            router_queue: 65_536,
            edge_queue: 65_536,
            drain_timeout_secs: 10,
            presence_ttl_secs: 60,
        }
    }
}

impl ClusterConfig {
    /// The node id: configured, or derived from `hostname`: an edge (`edge`) takes
    /// [`hashed_node_id`] (a Deployment pod's name is unique but has no ordinal), a router the
    /// name's trailing StatefulSet ordinal.
    pub fn resolve_node_id(&self, hostname: &str, edge: bool) -> Result<u64, ConfigError> {
        if self.node_id != 0 {
            return Ok(self.node_id);
        }
        if edge && !hostname.trim().is_empty() {
            return Ok(hashed_node_id(hostname));
        }
        ordinal_node_id(hostname).filter(|_| !edge).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "cluster.node_id is not set and the host name {hostname:?} ends in no ordinal (name-N)"
            ))
        })
    }

    /// The address other nodes dial.
    pub fn advertised(&self) -> Result<String, ConfigError> {
        let addr = if self.advertise.is_empty() { &self.listen } else { &self.advertise };
        let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
        if matches!(host, "0.0.0.0" | "[::]" | "::" | "") {
            return Err(ConfigError::Invalid(format!(
                "cluster.advertise must name an address other nodes can dial (listen is {addr:?})"
            )));
        }
        Ok(addr.clone())
    }
}

/// A node id from a host name without an ordinal (a Deployment pod's unique name): FNV-1a 64
/// with the top bit set, so it never equals an ordinal-derived id.
pub fn hashed_node_id(hostname: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in hostname.trim().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h | (1 << 63)
}

/// `name-N` → N + 1 (StatefulSet pod `starling-router-0` is node 1).
pub fn ordinal_node_id(hostname: &str) -> Option<u64> {
    let (_, n) = hostname.trim().rsplit_once('-')?;
    n.parse::<u64>().ok()?.checked_add(1)
}

/// Configuration problems, reported before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The TOML (after overrides) does not fit the schema.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Load the configuration: the file (if any), then `env` overrides (pass `std::env::vars()` in
/// production; tests pass their own list and never touch the process environment).
pub fn load(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|source| ConfigError::Read { path: p.display().to_string(), source })?,
        None => String::new(),
    };
    let mut root: toml::Table =
        text.parse().map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
    for (key, value) in env {
        let Some(rest) = key.strip_prefix(ENV_PREFIX) else { continue };
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        apply_override(&mut root, &path, &value)?;
    }
    let cfg: Config = toml::Value::Table(root)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
    validate(&cfg)?;
    Ok(cfg)
}

fn apply_override(root: &mut toml::Table, path: &[String], raw: &str) -> Result<(), ConfigError> {
    let Some((last, parents)) = path.split_last() else { return Ok(()) };
    let mut table = root;
    for p in parents {
        let entry = table.entry(p.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().ok_or_else(|| {
            ConfigError::Invalid(format!("{ENV_PREFIX}{}: {p} is not a table", path.join("__")))
        })?;
    }
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    table.insert(last.clone(), value);
    Ok(())
}

fn validate(cfg: &Config) -> Result<(), ConfigError> {
    if cfg.domains.is_empty() {
        return Err(ConfigError::Invalid("domains must name at least one domain".into()));
    }
    for d in &cfg.domains {
        if starling_xmpp::BareJid::new(d).map(|j| j.node().is_some()).unwrap_or(true) {
            return Err(ConfigError::Invalid(format!("domains: {d:?} is not a valid domain")));
        }
    }
    if !matches!(cfg.log.format.as_str(), "text" | "json") {
        return Err(ConfigError::Invalid("log.format must be \"text\" or \"json\"".into()));
    }
    if !matches!(cfg.store.backend.as_str(), "embedded" | "redis") {
        return Err(ConfigError::Invalid("store.backend must be \"embedded\" or \"redis\"".into()));
    }
    if cfg.store.backend == "redis" && cfg.store.redis_urls.is_empty() {
        return Err(ConfigError::Invalid("store.redis_urls must name at least one server".into()));
    }
    let c = &cfg.cluster;
    if c.election_timeout_min_ms <= c.heartbeat_ms || c.election_timeout_max_ms <= c.election_timeout_min_ms {
        return Err(ConfigError::Invalid(
            "cluster: need heartbeat_ms < election_timeout_min_ms < election_timeout_max_ms".into(),
        ));
    }
    if c.down_after_ms <= c.liveness_interval_ms || c.liveness_interval_ms == 0 {
        return Err(ConfigError::Invalid("cluster: need 0 < liveness_interval_ms < down_after_ms".into()));
    }
    if !(0.0..=1.0).contains(&cfg.tracing.sample_ratio) {
        return Err(ConfigError::Invalid("tracing.sample_ratio must be between 0 and 1".into()));
    }
    if c.max_voters == 0 {
        return Err(ConfigError::Invalid("cluster.max_voters must be at least 1".into()));
    }
    if cfg.c2s.max_stanza_bytes < 1024 {
        return Err(ConfigError::Invalid("c2s.max_stanza_bytes must be at least 1024".into()));
    }
    // Zero here is never what anyone means: it would close every connection at once, refuse
    // every stanza or every connection, or make passwords unusable.
    let at_least_one: [(&str, u64, &str); 12] = [
        ("c2s.handshake_timeout_secs", cfg.c2s.handshake_timeout_secs, "no client could ever log in"),
        ("c2s.idle_timeout_secs", cfg.c2s.idle_timeout_secs, "every session would be closed at once"),
        ("c2s.write_timeout_secs", cfg.c2s.write_timeout_secs, "every write would time out"),
        ("c2s.max_connections", cfg.c2s.max_connections as u64, "every connection would be refused"),
        ("c2s.session_queue", cfg.c2s.session_queue as u64, "no stanza could be queued to a session"),
        ("c2s.max_depth", cfg.c2s.max_depth as u64, "every stanza would be refused"),
        (
            "c2s.max_attributes",
            cfg.c2s.max_attributes as u64,
            "every stanza with an attribute would be refused",
        ),
        ("auth.scram_iterations", u64::from(cfg.auth.scram_iterations), "no password could be stored"),
        ("cluster.router_queue", cfg.cluster.router_queue as u64, "nothing could be sent between routers"),
        (
            "cluster.edge_queue",
            cfg.cluster.edge_queue as u64,
            "nothing could be sent between edges and routers",
        ),
        ("cluster.heartbeat_ms", cfg.cluster.heartbeat_ms, "Raft would spin"),
        ("cluster.presence_ttl_secs", cfg.cluster.presence_ttl_secs, "last presences would expire at once"),
    ];
    for (key, value, why) in at_least_one {
        if value == 0 {
            return Err(ConfigError::Invalid(format!("{key} must be at least 1, not 0 ({why})")));
        }
    }
    for (domain, secret) in &cfg.components.secrets {
        if secret.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "components.secrets: the secret for {domain:?} is empty (anyone could connect as it)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_need_no_file() {
        let c = load(None, env(&[])).unwrap();
        assert_eq!(c.domains, vec!["localhost"]);
        assert!(c.c2s.starttls_required);
        assert!(!c.c2s.allow_plaintext_auth);
        assert!(!c.registration.enabled);
        assert_eq!(c.c2s.max_stanza_bytes, 262_144);
    }

    #[test]
    fn environment_overrides_file_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        std::fs::write(&p, "domains = [\"a.example\"]\n[c2s]\nlisten = \"127.0.0.1:1\"\n").unwrap();
        let c = load(
            Some(&p),
            env(&[
                ("STARLING_C2S__LISTEN", "127.0.0.1:2"),
                ("STARLING_REGISTRATION__ENABLED", "true"),
                ("STARLING_COMPONENTS__SECRETS", "{ \"echo.a.example\" = \"pw\" }"),
                ("OTHER_VAR", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(c.domains, vec!["a.example"]);
        assert_eq!(c.c2s.listen, "127.0.0.1:2");
        assert!(c.registration.enabled);
        assert_eq!(c.components.secrets.get("echo.a.example").map(String::as_str), Some("pw"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(load(None, env(&[("STARLING_C2S__LISTEN_TYPO", "x")])).is_err());
        assert!(load(None, env(&[("STARLING_DOMAINS", "[\"a@b\"]")])).is_err());
        assert!(load(None, env(&[("STARLING_LOG__FORMAT", "xml")])).is_err());
        assert!(load(None, env(&[("STARLING_STORE__BACKEND", "mysql")])).is_err());
        assert!(load(None, env(&[("STARLING_CLUSTER__HEARTBEAT_MS", "5000")])).is_err());
    }

    #[test]
    fn zero_timeouts_queues_and_limits_are_refused_naming_the_key() {
        for key in [
            "c2s.handshake_timeout_secs",
            "c2s.idle_timeout_secs",
            "c2s.write_timeout_secs",
            "c2s.max_connections",
            "c2s.session_queue",
            "c2s.max_depth",
            "c2s.max_attributes",
            "auth.scram_iterations",
            "cluster.router_queue",
            "cluster.edge_queue",
            "cluster.heartbeat_ms",
            "cluster.presence_ttl_secs",
        ] {
            let var = format!("STARLING_{}", key.to_ascii_uppercase().replace('.', "__"));
            let err = load(None, env(&[(&var, "0")])).expect_err(key).to_string();
            assert!(err.contains(key), "{key}: {err}");
            assert!(load(None, env(&[(&var, "1")])).is_ok(), "{key} = 1 is fine");
        }
        let err = load(None, env(&[("STARLING_COMPONENTS__SECRETS", "{ \"c.localhost\" = \"\" }")]))
            .expect_err("empty secret")
            .to_string();
        assert!(err.contains("components.secrets") && err.contains("c.localhost"), "{err}");
        // Zero where it means "off" stays accepted.
        let c = load(
            None,
            env(&[
                ("STARLING_COMPONENTS__IDLE_TIMEOUT_SECS", "0"),
                ("STARLING_AUTH__FAILURES_PER_MINUTE", "0"),
            ]),
        )
        .unwrap();
        assert_eq!(c.components.idle_timeout_secs, 0);
        assert_eq!(c.c2s.write_timeout_secs, 30);
    }

    #[test]
    fn cluster_identity_from_ordinals_and_addresses() {
        assert_eq!(ordinal_node_id("starling-router-0"), Some(1));
        assert_eq!(ordinal_node_id("starling-router-12\n"), Some(13));
        assert_eq!(ordinal_node_id("laptop"), None);
        assert_eq!(ordinal_node_id("web-x"), None);
        let c = load(
            None,
            env(&[
                ("STARLING_CLUSTER__SEEDS", "[\"a:1\", \"b:2\"]"),
                ("STARLING_CLUSTER__LISTEN", "0.0.0.0:7400"),
            ]),
        )
        .unwrap()
        .cluster;
        assert_eq!(c.seeds, vec!["a:1", "b:2"]);
        assert_eq!(c.resolve_node_id("starling-router-2", false).unwrap(), 3);
        assert!(c.resolve_node_id("laptop", false).is_err(), "a router needs an ordinal");
        let edge = c.resolve_node_id("chat-starling-edge-7d9f8b6c5-x2kzq", true).unwrap();
        assert!(edge >= 1 << 63, "hashed ids stay clear of ordinals");
        assert_eq!(edge, hashed_node_id("chat-starling-edge-7d9f8b6c5-x2kzq\n"), "stable");
        assert_ne!(edge, hashed_node_id("chat-starling-edge-7d9f8b6c5-abcde"));
        assert!(c.advertised().is_err(), "a wildcard is not dialable");
        let c = ClusterConfig { advertise: "r1.svc:7400".into(), node_id: 7, ..c };
        assert_eq!(c.advertised().unwrap(), "r1.svc:7400");
        assert_eq!(c.resolve_node_id("laptop", false).unwrap(), 7);
    }
}
