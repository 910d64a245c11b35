//! `starling serve`: the edge and the router in one process, linked in memory.
//!
//! This is the same edge and router code a cluster runs; here the edge's [`SessionHost`] is the
//! router itself instead of a link to a remote one.

use crate::config::Config;
use anyhow::Context;
use opentelemetry_sdk::trace::SdkTracerProvider;
use starling_edge::{Edge, EdgeConfig, SessionHost};
use starling_router::{Router, RouterConfig};
use starling_xml::{Element, Limits};
use starling_xmpp::session::{Deliver, ToClient};
use starling_xmpp::FullJid;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The in-process link from edge to router.
pub struct LocalHost(pub Arc<Router>);

impl SessionHost for LocalHost {
    async fn bind(&self, jid: &FullJid, sink: Arc<dyn Deliver>) -> Option<u64> {
        match self.0.bind(jid, sink).await {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::warn!(%jid, error = %e, "bind refused");
                None
            }
        }
    }

    async fn handle(&self, from: &FullJid, stanza: Element) {
        self.0.handle_from_client(from, stanza).await
    }

    async fn unbind(&self, jid: &FullJid, id: u64, undelivered: Vec<ToClient>) {
        self.0.unbind(jid, id, undelivered).await
    }

    fn component_connected(&self, domain: &str, sink: Arc<dyn Deliver>) -> bool {
        self.0.component_connected(domain, sink)
    }

    fn component_disconnected(&self, domain: &str) {
        self.0.component_disconnected(domain)
    }

    async fn handle_from_component(&self, domain: &str, stanza: Element) {
        self.0.handle_from_component(domain, stanza).await
    }
}

/// Logs to stderr (text or JSON) and, when `[tracing] otlp_endpoint` is set, spans of stanzas'
/// trips to an OTLP collector as `service.name` `starling-<role>`, instance `node`. The returned
/// provider flushes the last spans when shut down. Call inside the runtime.
pub(crate) fn init_logging(cfg: &Config, role: &str, node: u64) -> Option<SdkTracerProvider> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let trace_target = starling_telemetry::trace::TARGET;
    let filter = || {
        let f = tracing_subscriber::EnvFilter::try_new(&cfg.log.level)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        // A stanza's spans are for the collector, never for the log.
        f.add_directive(format!("{trace_target}=off").parse().unwrap_or_default())
    };
    let json = cfg.log.format == "json";
    let text_layer =
        (!json).then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter()));
    let json_layer = json
        .then(|| tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).with_filter(filter()));
    let mut provider = None;
    let otlp = if cfg.tracing.otlp_endpoint.is_empty() {
        None
    } else {
        let settings = starling_telemetry::trace::OtlpSettings {
            endpoint: cfg.tracing.otlp_endpoint.clone(),
            service: format!("starling-{role}"),
            instance: node.to_string(),
            sample_ratio: cfg.tracing.sample_ratio,
        };
        match starling_telemetry::trace::otlp_layer(&settings) {
            Ok((layer, p)) => {
                provider = Some(p);
                let only_trips = tracing_subscriber::filter::Targets::new()
                    .with_target(trace_target, tracing::Level::INFO);
                Some(layer.with_filter(only_trips))
            }
            Err(e) => {
                eprintln!("starling: tracing disabled: {e}");
                None
            }
        }
    };
    let _ = tracing_subscriber::registry().with(otlp).with(text_layer).with(json_layer).try_init();
    provider
}

/// Flush and stop the span exporter, if any. The flush blocks until the exporter's last batch
/// is sent, which needs the runtime's tasks (the gRPC channel) to run: it waits on a blocking
/// thread so that a single-threaded runtime keeps running them meanwhile.
pub(crate) async fn finish_tracing(provider: Option<SdkTracerProvider>) {
    if let Some(p) = provider {
        let _ = tokio::task::spawn_blocking(move || p.shutdown()).await;
    }
}

pub(crate) async fn bind(addr: &str, what: &str) -> anyhow::Result<TcpListener> {
    let l = listen(addr).await.with_context(|| format!("binding the {what} listener to {addr}"))?;
    // One line per listener on stdout, so people and test harnesses see where to connect.
    println!("starling: {what} listening on {}", l.local_addr()?);
    Ok(l)
}

/// A listener on the first of `addr`'s addresses that binds, with TCP_NODELAY set on it: Linux
/// copies the option to every connection it accepts, which saves the edge a setsockopt(2) per
/// connection (the edge still sets it itself elsewhere).
async fn listen(addr: &str) -> std::io::Result<TcpListener> {
    let mut failure = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket =
            if a.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.set_nodelay(true)?;
        match socket.bind(a) {
            // The kernel caps the backlog at net.core.somaxconn, as with std's listeners.
            Ok(()) => return socket.listen(4096),
            Err(e) => failure = Some(e),
        }
    }
    Err(failure
        .unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to bind")))
}

/// The edge's settings from the configuration (the same for `serve` and `starling edge`).
pub(crate) fn edge_config(cfg: &Config) -> EdgeConfig {
    EdgeConfig {
        domains: cfg.domains.clone(),
        starttls_required: cfg.c2s.starttls_required,
        allow_plaintext_auth: cfg.c2s.allow_plaintext_auth,
        registration_enabled: cfg.registration.enabled,
        limits: Limits {
            max_stanza_bytes: cfg.c2s.max_stanza_bytes,
            max_depth: cfg.c2s.max_depth,
            max_attrs: cfg.c2s.max_attributes,
        },
        handshake_timeout: Duration::from_secs(cfg.c2s.handshake_timeout_secs),
        idle_timeout: Duration::from_secs(cfg.c2s.idle_timeout_secs),
        write_timeout: Duration::from_secs(cfg.c2s.write_timeout_secs),
        component_idle_timeout: match cfg.components.idle_timeout_secs {
            0 => None,
            secs => Some(Duration::from_secs(secs)),
        },
        auth_failures_per_minute: cfg.auth.failures_per_minute,
        max_connections: cfg.c2s.max_connections,
        session_queue: cfg.c2s.session_queue,
        scram_iterations: cfg.auth.scram_iterations,
        components: cfg.components.secrets.clone().into_iter().collect(),
    }
}

/// The router's settings from the configuration (the same for `serve` and `starling router`).
pub(crate) fn router_config(cfg: &Config) -> RouterConfig {
    RouterConfig {
        domains: cfg.domains.clone(),
        offline_max: cfg.offline.max_per_user,
        registration_enabled: cfg.registration.enabled,
        scram_iterations: cfg.auth.scram_iterations,
        ..RouterConfig::default()
    }
}

/// The TLS server configuration: the configured certificate, or one generated in `data_dir/tls/`.
pub(crate) fn load_tls(cfg: &Config) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls_dir = cfg.data_dir.join("tls");
    let cert = cfg.tls.cert.clone().unwrap_or_else(|| tls_dir.join("cert.pem"));
    let key = cfg.tls.key.clone().unwrap_or_else(|| tls_dir.join("key.pem"));
    starling_edge::tls::load_or_generate(&cert, &key, &cfg.domains).context("setting up TLS")
}

/// The operator's HTTP endpoint, when configured; `ready` answers `/readyz`.
pub(crate) async fn spawn_http(
    cfg: &Config,
    ready: starling_telemetry::http::Readiness,
    shutdown: watch::Receiver<bool>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<()> {
    if !cfg.http.listen.is_empty() {
        let l = bind(&cfg.http.listen, "http").await?;
        tasks.push(tokio::spawn(starling_telemetry::http::serve(l, ready, shutdown)));
    }
    Ok(())
}

/// The client and component listeners of an edge, as configured.
pub(crate) async fn spawn_edge_listeners<H: SessionHost>(
    cfg: &Config,
    edge: &Arc<Edge<H>>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<Option<std::net::SocketAddr>> {
    let mut bound = None;
    if !cfg.c2s.listen.is_empty() {
        let l = bind(&cfg.c2s.listen, "c2s").await?;
        bound = l.local_addr().ok();
        tasks.push(tokio::spawn(edge.clone().serve_clients(l, false)));
    }
    if !cfg.c2s.direct_tls_listen.is_empty() {
        let l = bind(&cfg.c2s.direct_tls_listen, "c2s-direct-tls").await?;
        bound = bound.or(l.local_addr().ok());
        tasks.push(tokio::spawn(edge.clone().serve_clients(l, true)));
    }
    if !cfg.components.secrets.is_empty() && !cfg.components.listen.is_empty() {
        let l = bind(&cfg.components.listen, "component").await?;
        tasks.push(tokio::spawn(edge.clone().serve_components(l)));
    }
    Ok(bound)
}

/// Stop `tasks`, then wait (bounded by `grace`) until `remaining()` reaches zero.
pub(crate) async fn stop(
    tasks: Vec<tokio::task::JoinHandle<()>>,
    grace: Duration,
    remaining: impl Fn() -> usize,
) {
    for t in tasks {
        t.abort();
        let _ = t.await;
    }
    let deadline = tokio::time::Instant::now() + grace;
    while remaining() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Run until SIGINT/SIGTERM, then close every stream with `<system-shutdown/>`.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    let tracing = init_logging(&cfg, "serve", 1);
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let store = crate::users::open_store(&cfg)?;
    let tls = load_tls(&cfg)?;
    let router = Arc::new(Router::new(router_config(&cfg), store.clone()));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let store_for_admin = store.clone();
    let edge = Edge::new(
        edge_config(&cfg),
        Arc::new(LocalHost(router.clone())),
        store,
        Some(tls),
        shutdown_rx.clone(),
    );

    let mut tasks = Vec::new();
    let ready = Arc::new(AtomicBool::new(false));
    starling_telemetry::metrics().build_info.with_label_values(&[env!("CARGO_PKG_VERSION"), "serve"]).set(1);
    // Bound first, so a harness reading the announcements sees it before the XMPP listeners;
    // `serve` is ready once every listener is bound.
    let flag = ready.clone();
    spawn_http(&cfg, Arc::new(move || flag.load(Ordering::Acquire)), shutdown_rx.clone(), &mut tasks).await?;
    // The admin socket exists before the client listeners are announced: `starling user …`
    // right after start must reach this server, not try (and fail) to open its locked database.
    #[cfg(unix)]
    {
        let path = cfg.data_dir.join(crate::users::ADMIN_SOCKET);
        match crate::admin::bind(&path) {
            Ok(listener) => {
                let accounts: Arc<dyn starling_store::AccountStore> = store_for_admin;
                let iterations = cfg.auth.scram_iterations;
                tasks.push(tokio::spawn(async move {
                    if let Err(e) = crate::admin::serve(listener, accounts, iterations).await {
                        tracing::warn!(error = %e, "admin socket failed");
                    }
                }));
            }
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "admin socket unavailable"),
        }
    }
    #[cfg(not(unix))]
    drop(store_for_admin);
    spawn_edge_listeners(&cfg, &edge, &mut tasks).await?;
    ready.store(true, Ordering::Release);
    tracing::info!(domains = ?cfg.domains, version = env!("CARGO_PKG_VERSION"), "starling serving");

    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    // Connections close themselves with <system-shutdown/>; give them a bounded grace period.
    stop(tasks, Duration::from_secs(5), || router.session_count()).await;
    let _ = std::fs::remove_file(cfg.data_dir.join(crate::users::ADMIN_SOCKET));
    finish_tracing(tracing).await;
    Ok(())
}

pub(crate) async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What every connection's task keeps whatever it is doing: an idle session pays for the
    /// largest state its handling can reach, so the routing side's futures (the whole router
    /// here) and the negotiation steps are boxed out of it. Over this budget, idle memory per
    /// session regresses (measured: 1,976 bytes in release builds, 1,992 in debug).
    #[test]
    fn a_connection_keeps_a_small_state() {
        let budget = 2560;
        for (role, size) in [
            ("serve", starling_edge::c2s::connection_state_size::<LocalHost>()),
            ("cluster edge", starling_edge::c2s::connection_state_size::<starling_cluster::EdgeHost>()),
        ] {
            assert!(size <= budget, "{role}: a connection's state is {size} bytes (budget {budget})");
        }
    }
}
