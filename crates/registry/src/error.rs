//! The crate's one error type.

/// Anything the registry can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The durable store (`raft.redb`) failed.
    #[error("registry storage: {0}")]
    Storage(String),
    /// A file system operation failed (creating the data directory).
    #[error("registry i/o: {0}")]
    Io(#[from] std::io::Error),
    /// openraft refused or failed an operation (fatal errors, membership changes).
    #[error("raft: {0}")]
    Raft(String),
    /// The configuration is not usable (for instance election timeouts not above the heartbeat).
    #[error("registry configuration: {0}")]
    Config(String),
    /// A peer address does not make a valid endpoint.
    #[error("invalid address {0:?}")]
    InvalidAddress(String),
    /// A gRPC call failed.
    #[error("rpc: {0}")]
    Rpc(#[from] tonic::Status),
    /// A message did not encode or decode.
    #[error("codec: {0}")]
    Codec(String),
    /// The leader refused an administrative request; the message says why.
    #[error("refused: {0}")]
    Refused(String),
    /// No registry node answered (or none knew a leader) before the deadline.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The registry node is shut down.
    #[error("the registry is shut down")]
    Shutdown,
}

impl From<serde_json::Error> for RegistryError {
    fn from(e: serde_json::Error) -> RegistryError {
        RegistryError::Codec(e.to_string())
    }
}

impl From<redb::Error> for RegistryError {
    fn from(e: redb::Error) -> RegistryError {
        RegistryError::Storage(e.to_string())
    }
}
