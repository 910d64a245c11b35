//! `starling`: the XMPP server binary.
//!
//! - `starling serve`: a complete single-node server (edge and router in one process, embedded store).
//! - `starling user add|remove|passwd|list`: account administration on the embedded store.
//! - `starling --version`
//!
//! Modules: [`config`] (file + environment), [`serve`] (wiring and lifecycle), [`users`] (account
//! commands), [`admin`] (the local admin socket those commands use while `serve` runs).

mod admin;
mod config;
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
    match cli.command {
        Command::Serve => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(serve::serve(cfg))
        }
        Command::User { action } => users::run(&cfg, action),
    }
}
