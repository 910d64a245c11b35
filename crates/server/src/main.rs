//! `starling`: the XMPP server binary.
//!
//! - `starling serve`: a complete single-node server (edge and router in one process, embedded store).
//! - `starling router` / `starling edge`: the cluster roles (see [`roles`]).
//! - `starling cluster status|join|promote|drain|remove`: cluster administration.
//! - `starling user add|remove|passwd|list`: account administration on the configured store.
//! - `starling --version`
//!
//! Modules: [`config`] (file + environment), [`serve`] (wiring and lifecycle), [`users`] (account
//! commands), [`admin`] (the local admin socket those commands use while `serve` runs),
//! [`roles`] (router, edge and cluster administration).

mod admin;
mod config;
mod roles;
mod serve;
mod users;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Starling, a clustered XMPP server.
#[derive(Parser, Debug)]
#[command(name = "starling", version, about)]
struct Cli {
    /// Configuration file (TOML). Optional: defaults serve `localhost`.
    #[arg(long, short, global = true, env = "STARLING_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a complete single-node server.
    Serve,
    /// Run a cluster router: owns the sessions of its slots, holds a registry (Raft) replica.
    Router,
    /// Run a cluster edge: terminates client connections, forwards to the routers.
    Edge,
    /// Administer a cluster through the registry's gRPC API.
    Cluster {
        /// A registry node to ask (`host:port`); default: `cluster.seeds`, else `cluster.listen`.
        #[arg(long)]
        addr: Option<String>,
        #[command(subcommand)]
        action: roles::ClusterAction,
    },
    /// Manage accounts (works whether or not `serve` is running on the same data directory).
    User {
        #[command(subcommand)]
        action: users::UserAction,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k != "STARLING_CONFIG").collect();
    let cfg = config::load(cli.config.as_deref(), env)?;
    let workers = cfg.worker_threads;
    let runtime = || runtime(workers);
    match cli.command {
        Command::Serve => runtime()?.block_on(serve::serve(cfg)),
        Command::Router => runtime()?.block_on(roles::router(cfg)),
        Command::Edge => runtime()?.block_on(roles::edge(cfg)),
        Command::Cluster { addr, action } => runtime()?.block_on(roles::cluster(&cfg, addr, action)),
        Command::User { action } => users::run(&cfg, action),
    }
}

/// The async runtime for `workers` threads (0: one per core this process may use). One thread
/// gets the single-threaded runtime: a one-worker pool still parks the main thread and wakes
/// its worker across threads, which costs about 6 µs per login on one core (decision 0008).
fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let workers = match workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    if workers == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()
    }
}
