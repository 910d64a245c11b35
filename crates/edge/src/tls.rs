//! TLS configuration: rustls with TLS 1.2 and 1.3 only, certificates from PEM files or a
//! self-signed certificate generated (and kept) for local use.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// Why TLS could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading or writing a PEM file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The PEM did not contain a usable certificate chain or key.
    #[error("bad PEM: {0}")]
    Pem(String),
    /// rustls refused the certificate/key.
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Generate(String),
}

/// Build the server configuration from PEM bytes. Protocol versions are rustls' safe defaults:
/// TLS 1.3 and TLS 1.2, never older.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Pem("no certificate found".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(cfg))
}

/// A self-signed certificate (PEM cert, PEM key) for `domains`.
pub fn generate_self_signed(domains: &[String]) -> Result<(String, String), TlsError> {
    let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let params =
        rcgen::CertificateParams::new(domains.to_vec()).map_err(|e| TlsError::Generate(e.to_string()))?;
    let cert = params.self_signed(&key).map_err(|e| TlsError::Generate(e.to_string()))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Load the certificate and key at the given paths; when neither file exists, generate a
/// self-signed pair for `domains`, write it there (key readable by the owner only), and use it.
pub fn load_or_generate(
    cert: &Path,
    key: &Path,
    domains: &[String],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    fn io(p: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
        move |source| TlsError::Io { path: p.display().to_string(), source }
    }
    if !cert.exists() && !key.exists() {
        let (c, k) = generate_self_signed(domains)?;
        if let Some(dir) = cert.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        if let Some(dir) = key.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        std::fs::write(cert, c).map_err(io(cert))?;
        write_private(key, k.as_bytes()).map_err(io(key))?;
        tracing::info!(cert = %cert.display(), "generated a self-signed certificate");
    }
    let c = std::fs::read(cert).map_err(io(cert))?;
    let k = std::fs::read(key).map_err(io(key))?;
    server_config(&c, &k)
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificate_loads_and_is_kept() {
        let dir = std::env::temp_dir().join(format!("starling-tls-{}", std::process::id()));
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        load_or_generate(&c, &k, &["localhost".to_string()]).unwrap();
        let first = std::fs::read(&c).unwrap();
        load_or_generate(&c, &k, &["localhost".to_string()]).unwrap();
        assert_eq!(first, std::fs::read(&c).unwrap(), "an existing certificate is reused");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn garbage_pem_is_an_error() {
        assert!(server_config(b"nope", b"nope").is_err());
    }
}
