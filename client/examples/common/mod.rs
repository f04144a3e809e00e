//! What every example needs: the client configuration from the environment.
//!
//! - `ROCKETLOG_ENDPOINT`: the access point (default `127.0.0.1:8081`);
//! - `ROCKETLOG_TLS`: unset for plaintext; `any` for TLS accepting any certificate (e.g. the
//!   self-signed one `rocketlog standalone` generates); otherwise the path of a PEM CA
//!   certificate to verify the broker with.

use rocketlog_client::{ClientConfig, TlsConfig};

pub fn config_from_env() -> anyhow::Result<ClientConfig> {
    let endpoint =
        std::env::var("ROCKETLOG_ENDPOINT").unwrap_or_else(|_| "127.0.0.1:8081".to_owned());
    let mut builder = ClientConfig::builder().access_point(endpoint);
    match std::env::var("ROCKETLOG_TLS").ok().as_deref() {
        None | Some("") => {}
        Some("any") => builder = builder.tls(TlsConfig::new().accept_any_certificate()),
        Some(ca_file) => builder = builder.tls(TlsConfig::new().ca_certificate_file(ca_file)),
    }
    Ok(builder.build()?)
}
