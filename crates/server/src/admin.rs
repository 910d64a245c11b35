//! The local admin socket: `data_dir/admin.sock`, so `starling user …` works while `serve` runs
//! (the embedded database admits one process at a time).
//!
//! The socket is created owner-only; whoever may use it could read the database file anyway.
//! Protocol: one request line, `VERB arg…` with arguments base64-encoded (passwords may contain
//! spaces), answered by result lines and a final `ok` or `error: reason`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use starling_store::{derive_credentials, AccountStore, StoreError};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Arc;

/// A request: verb and decoded arguments.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// add | remove | passwd | list
    pub verb: String,
    /// Decoded arguments.
    pub args: Vec<String>,
}

/// Encode a request line.
pub fn encode(verb: &str, args: &[&str]) -> String {
    let mut line = verb.to_owned();
    for a in args {
        line.push(' ');
        line.push_str(&B64.encode(a));
    }
    line.push('\n');
    line
}

/// Decode a request line.
pub fn decode(line: &str) -> Option<Request> {
    let mut parts = line.split_whitespace();
    let verb = parts.next()?.to_owned();
    let args = parts
        .map(|p| B64.decode(p).ok().and_then(|b| String::from_utf8(b).ok()))
        .collect::<Option<Vec<_>>>()?;
    Some(Request { verb, args })
}

/// Carry out a request on the store; Ok(lines) or Err(reason).
pub fn execute(store: &dyn AccountStore, iterations: u32, req: &Request) -> Result<Vec<String>, String> {
    let creds =
        |pw: &str| derive_credentials(pw, iterations).map_err(|e| format!("password not acceptable: {e}"));
    match (req.verb.as_str(), req.args.as_slice()) {
        ("add", [user, pw]) => match store.create_account(user, creds(pw)?) {
            Ok(()) => Ok(vec![format!("created {user}")]),
            Err(StoreError::AccountExists) => Err(format!("{user} already exists")),
            Err(e) => Err(e.to_string()),
        },
        ("passwd", [user, pw]) => match store.set_credentials(user, creds(pw)?) {
            Ok(()) => Ok(vec![format!("password changed for {user}")]),
            Err(StoreError::NoSuchAccount) => Err(format!("{user} does not exist")),
            Err(e) => Err(e.to_string()),
        },
        ("remove", [user]) => match store.remove_account(user) {
            Ok(true) => Ok(vec![format!("removed {user}")]),
            Ok(false) => Err(format!("{user} does not exist")),
            Err(e) => Err(e.to_string()),
        },
        ("list", []) => store.list_accounts().map_err(|e| e.to_string()),
        _ => Err("unknown request".into()),
    }
}

/// Create the admin socket (owner-only), replacing a stale one. Done before the server
/// announces itself, so `starling user …` run right after start finds it.
#[cfg(unix)]
pub fn bind(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serve the admin socket until the task is dropped.
#[cfg(unix)]
pub async fn serve(
    listener: tokio::net::UnixListener,
    store: Arc<dyn AccountStore>,
    iterations: u32,
) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    loop {
        let (stream, _) = listener.accept().await?;
        let store = store.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(r);
            if reader.read_line(&mut line).await.is_err() {
                return;
            }
            let reply = match decode(&line) {
                None => "error: malformed request\n".to_owned(),
                Some(req) => {
                    let done = tokio::task::spawn_blocking(move || execute(&*store, iterations, &req)).await;
                    match done {
                        Ok(Ok(lines)) => lines.into_iter().map(|l| l + "\n").collect::<String>() + "ok\n",
                        Ok(Err(e)) => format!("error: {e}\n"),
                        Err(e) => format!("error: {e}\n"),
                    }
                }
            };
            let _ = w.write_all(reply.as_bytes()).await;
        });
    }
}

/// Send a request to a running server. None when no server listens on `path`.
#[cfg(unix)]
pub fn request(path: &Path, verb: &str, args: &[&str]) -> Option<Result<Vec<String>, String>> {
    let mut s = std::os::unix::net::UnixStream::connect(path).ok()?;
    if s.write_all(encode(verb, args).as_bytes()).is_err() {
        return Some(Err("admin socket write failed".into()));
    }
    let mut lines = Vec::new();
    for line in BufReader::new(s).lines() {
        let Ok(line) = line else { break };
        if line == "ok" {
            return Some(Ok(lines));
        }
        if let Some(e) = line.strip_prefix("error: ") {
            return Some(Err(e.to_owned()));
        }
        lines.push(line);
    }
    Some(Err("admin socket closed without an answer".into()))
}

/// No admin socket off Unix: commands always open the database directly.
#[cfg(not(unix))]
pub fn request(_: &Path, _: &str, _: &[&str]) -> Option<Result<Vec<String>, String>> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_roundtrip_arguments_with_spaces() {
        let line = encode("add", &["a@localhost", "pass word \u{e9}"]);
        let req = decode(&line).unwrap();
        assert_eq!(req.verb, "add");
        assert_eq!(req.args, vec!["a@localhost".to_string(), "pass word \u{e9}".to_string()]);
        assert!(decode("add !!!").is_none());
    }
}
