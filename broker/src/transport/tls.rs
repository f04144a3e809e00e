//! TLS for the client port: the operator's PEM certificate and key, or a self-signed
//! certificate generated at start (as the Apache proxy's default test mode does). ALPN offers
//! only `h2`: gRPC needs HTTP/2 and Java/Go/C# clients insist on the negotiated protocol.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

use crate::error::BrokerError;

fn tls_err(reason: impl Into<String>) -> BrokerError {
    BrokerError::Tls {
        reason: reason.into(),
    }
}

/// A server config from PEM files, or a self-signed one valid for `hosts` (DNS names or IP
/// addresses) when `pem` is `None`.
pub fn server_config(
    pem: Option<(&Path, &Path)>,
    hosts: &[String],
) -> Result<Arc<ServerConfig>, BrokerError> {
    let (certs, key) = match pem {
        Some((cert, key)) => load_pem(cert, key)?,
        None => self_signed(hosts)?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls_err(format!("certificate and key do not match: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn read(path: &Path) -> Result<Vec<u8>, BrokerError> {
    std::fs::read(path).map_err(|source| BrokerError::Io {
        what: "reading",
        path: path.to_owned(),
        source,
    })
}

fn load_pem(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), BrokerError> {
    let cert_pem = read(cert_path)?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(cert_pem.as_slice()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(format!("{}: {e}", cert_path.display())))?;
    if certs.is_empty() {
        return Err(tls_err(format!(
            "{} holds no PEM certificate",
            cert_path.display()
        )));
    }
    let key_pem = read(key_path)?;
    let key = rustls_pemfile::private_key(&mut BufReader::new(key_pem.as_slice()))
        .map_err(|e| tls_err(format!("{}: {e}", key_path.display())))?
        .ok_or_else(|| tls_err(format!("{} holds no PEM private key", key_path.display())))?;
    Ok((certs, key))
}

fn self_signed(
    hosts: &[String],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), BrokerError> {
    let mut names: Vec<String> = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    for h in hosts {
        if !h.is_empty() && !names.contains(h) {
            names.push(h.clone());
        }
    }
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| tls_err(format!("generating a self-signed certificate: {e}")))?;
    let cert = generated.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    Ok((vec![cert], key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_config_offers_h2() {
        let cfg = server_config(None, &["broker.example".to_owned()]).unwrap();
        assert_eq!(cfg.alpn_protocols, vec![b"h2".to_vec()]);
    }

    #[test]
    fn missing_pem_file_is_an_io_error() {
        let err = server_config(
            Some((
                Path::new("/nonexistent/c.pem"),
                Path::new("/nonexistent/k.pem"),
            )),
            &[],
        )
        .unwrap_err();
        assert!(matches!(err, BrokerError::Io { .. }), "{err}");
    }

    #[test]
    fn pem_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        server_config(Some((&cert, &key)), &[]).unwrap();
        // A key file with no key in it is refused with a clear error.
        std::fs::write(&key, "nothing").unwrap();
        let err = server_config(Some((&cert, &key)), &[]).unwrap_err();
        assert!(err.to_string().contains("no PEM private key"), "{err}");
    }
}
