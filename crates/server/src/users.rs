//! `starling user …`: account administration, through a running server's admin socket or
//! directly on the embedded store.

use crate::config::Config;
use anyhow::{bail, Context};
use clap::Subcommand;
use starling_store::{EmbeddedStore, RedisStore, Store};
use std::io::BufRead;
use std::sync::Arc;

/// Account commands.
#[derive(Subcommand, Debug)]
pub enum UserAction {
    /// Create an account. The password is read from `--password` or, if absent, from the first line of stdin.
    Add {
        /// The account, `user@domain`.
        jid: String,
        /// The password (prefer stdin: command lines are visible to other local users).
        #[arg(long)]
        password: Option<String>,
    },
    /// Remove an account and everything stored for it.
    Remove {
        /// The account, `user@domain`.
        jid: String,
    },
    /// Change an account's password (read like `add`).
    Passwd {
        /// The account, `user@domain`.
        jid: String,
        /// The new password.
        #[arg(long)]
        password: Option<String>,
    },
    /// List accounts.
    List,
}

/// Open the store named by the configuration (`[store] backend`), explaining the common failure.
pub fn open_store(cfg: &Config) -> anyhow::Result<Arc<dyn Store>> {
    if cfg.store.backend == "redis" {
        let store = RedisStore::open(&cfg.store.redis_urls, &cfg.store.key_prefix)
            .with_context(|| format!("opening the Redis store at {:?}", cfg.store.redis_urls))?;
        return Ok(Arc::new(store));
    }
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let path = cfg.data_dir.join("starling.redb");
    let store = EmbeddedStore::open(&path).with_context(|| {
        format!("opening {} (is a server running on this data directory? stop it first)", path.display())
    })?;
    Ok(Arc::new(store))
}

fn account(cfg: &Config, jid: &str) -> anyhow::Result<String> {
    let bare = starling_xmpp::parse_jid(jid)
        .ok()
        .filter(|j| j.resource().is_none())
        .map(|j| j.to_bare())
        .with_context(|| format!("{jid:?} is not a valid bare JID"))?;
    if bare.node().is_none() {
        bail!("{jid:?} has no user part; write user@domain");
    }
    if !cfg.domains.iter().any(|d| d == bare.domain().as_str()) {
        bail!("{} is not one of the served domains {:?}", bare.domain(), cfg.domains);
    }
    Ok(bare.to_string())
}

fn password(given: Option<String>) -> anyhow::Result<String> {
    let pw = match given {
        Some(p) => p,
        None => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).context("reading the password from stdin")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if pw.is_empty() {
        bail!("empty password");
    }
    Ok(pw)
}

/// Run one account command: through the running server's admin socket when there is one,
/// otherwise directly on the database.
pub fn run(cfg: &Config, action: UserAction) -> anyhow::Result<()> {
    let (verb, args): (&str, Vec<String>) = match action {
        UserAction::Add { jid, password: pw } => ("add", vec![account(cfg, &jid)?, password(pw)?]),
        UserAction::Passwd { jid, password: pw } => ("passwd", vec![account(cfg, &jid)?, password(pw)?]),
        UserAction::Remove { jid } => ("remove", vec![account(cfg, &jid)?]),
        UserAction::List => ("list", vec![]),
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let socket = cfg.data_dir.join(ADMIN_SOCKET);
    let result = match crate::admin::request(&socket, verb, &args) {
        Some(r) => r,
        None => {
            let store = open_store(cfg)?;
            let req = crate::admin::Request {
                verb: verb.to_owned(),
                args: args.iter().map(|a| a.to_string()).collect(),
            };
            crate::admin::execute(store.as_ref(), cfg.auth.scram_iterations, &req)
        }
    };
    match result {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
            Ok(())
        }
        Err(e) => bail!("{e}"),
    }
}

/// File name of the admin socket inside the data directory.
pub const ADMIN_SOCKET: &str = "admin.sock";
