//! The client port: [`rocketlog_transport`] (h2c and TLS on one listener, handshake deadline,
//! keep-alive, connection limit) serving the broker's services, with the certificate from
//! [`tls`].

pub mod tls;

pub use rocketlog_transport::{
    ConnectionKind, ConnectionSettings, Transport, DEFAULT_MAX_CONCURRENT_STREAMS,
};

#[cfg(test)]
mod tests;
