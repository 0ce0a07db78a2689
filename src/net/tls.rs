//! TLS: certificates from PEM files, SNI, reload without restart, and the
//! rustls server configuration every shard's acceptor shares.
//!
//! Keys may be PKCS#8, PKCS#1 (RSA) or SEC1 (EC), and an encrypted PKCS#8
//! key is decrypted with the configured passphrase. Certificates are chosen
//! by SNI server name, with the default certificate for unknown or absent
//! names. [`TlsCerts::reload`] reads every file again and swaps the set in
//! at once: new handshakes use it, open connections are untouched.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::{TlsCertConfig, TlsConfig};
use crate::error::{Error, Result};

/// ALPN protocol ids we offer, most preferred first.
pub(crate) const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The loaded certificates: the default one and those chosen by server name.
#[derive(Debug)]
struct CertSet {
    default: Arc<CertifiedKey>,
    by_name: Vec<(String, Arc<CertifiedKey>)>,
}

/// The certificates in use, swappable while the server runs.
pub(crate) struct TlsCerts {
    config: TlsConfig,
    current: RwLock<Arc<CertSet>>,
}

impl fmt::Debug for TlsCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsCerts").finish_non_exhaustive()
    }
}

impl TlsCerts {
    /// Loads every certificate `config` names; errors name the key and the file.
    pub(crate) fn load(config: &TlsConfig) -> Result<Arc<TlsCerts>> {
        let set = load_set(config)?;
        Ok(Arc::new(TlsCerts { config: config.clone(), current: RwLock::new(Arc::new(set)) }))
    }

    /// Reads the files again and switches to them; on error the old set stays.
    pub(crate) fn reload(&self) -> Result<()> {
        let set = load_set(&self.config)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        Ok(())
    }

    fn current(&self) -> Arc<CertSet> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl ResolvesServerCert for TlsCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.current();
        if let Some(name) = hello.server_name() {
            if let Some((_, key)) = set.by_name.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
                return Some(key.clone());
            }
        }
        Some(set.default.clone())
    }
}

/// The rustls server configuration: TLS 1.2 and 1.3 with rustls's (modern
/// only) cipher suites, ALPN `h2` (when enabled) then `http/1.1`.
pub(crate) fn server_config(certs: Arc<TlsCerts>, offer_h2: bool) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config("tls", e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols =
        if offer_h2 { vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()] } else { vec![ALPN_HTTP11.to_vec()] };
    Ok(Arc::new(config))
}

fn load_set(config: &TlsConfig) -> Result<CertSet> {
    let default = load_certified_key(
        "tls",
        config.cert.as_deref().ok_or_else(|| Error::config("tls.cert", "is required when [tls] is present"))?,
        config.key.as_deref().ok_or_else(|| Error::config("tls.key", "is required when [tls] is present"))?,
        config.passphrase.as_deref(),
    )?;
    let mut by_name = Vec::with_capacity(config.sni.len());
    for (i, entry) in config.sni.iter().enumerate() {
        let TlsCertConfig { server_name, cert, key, passphrase } = entry;
        let key = load_certified_key(&format!("tls.sni[{i}]"), cert, key, passphrase.as_deref())?;
        by_name.push((server_name.clone(), key));
    }
    Ok(CertSet { default, by_name })
}

fn load_certified_key(key_name: &str, cert: &Path, key: &Path, passphrase: Option<&str>) -> Result<Arc<CertifiedKey>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<std::result::Result<_, _>>())
        .map_err(|e| Error::config(&format!("{key_name}.cert"), format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(Error::config(&format!("{key_name}.cert"), format!("{}: no certificate in it", cert.display())));
    }
    let private = load_private_key(key, passphrase).map_err(|e| Error::config(&format!("{key_name}.key"), e))?;
    let signer = ring::sign::any_supported_type(&private)
        .map_err(|e| Error::config(&format!("{key_name}.key"), format!("{}: {e}", key.display())))?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| {
        Error::config(&format!("{key_name}.key"), format!("{} does not match the certificate: {e}", key.display()))
    })?;
    Ok(Arc::new(certified))
}

/// Reads a PEM private key: PKCS#8, PKCS#1, SEC1, or encrypted PKCS#8 (with `passphrase`).
fn load_private_key(path: &Path, passphrase: Option<&str>) -> std::result::Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if memchr::memmem::find(&pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----").is_some() {
        let passphrase = passphrase.ok_or_else(|| format!("{} is encrypted: set tls passphrase", path.display()))?;
        let text = std::str::from_utf8(&pem).map_err(|_| format!("{}: not PEM text", path.display()))?;
        let start = text.find("-----BEGIN ENCRYPTED PRIVATE KEY-----").unwrap_or(0);
        let (_, der) =
            pkcs8::der::pem::decode_vec(&text.as_bytes()[start..]).map_err(|e| format!("{}: {e}", path.display()))?;
        let encrypted =
            pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice()).map_err(|e| format!("{}: {e}", path.display()))?;
        let plain = encrypted
            .decrypt(passphrase)
            .map_err(|_| format!("{}: cannot decrypt (wrong passphrase?)", path.display()))?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(plain.as_bytes().to_vec())));
    }
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| format!("{}: {e}", path.display()))
}
