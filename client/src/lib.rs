//! A Rust client for rocketlog and Apache RocketMQ 5, over the `apache.rocketmq.v2` gRPC API.
//!
//! - [`Producer`]: sends messages (normal, FIFO by message group, delayed), with retries and
//!   failover across brokers; cheap to clone, many sends in flight at once.
//! - [`SimpleConsumer`]: receives on demand with long polling; the caller acknowledges.
//! - [`PushConsumer`]: receives in the background and calls an async handler per message.
//! - [`PullConsumer`]: reads assigned queues by offset and commits its position (Kafka-style).
//! - [`TransactionProducer`]: half messages committed or rolled back, with a
//!   [`TransactionChecker`] answering the server's checks.
//!
//! Every client starts from a [`ClientConfig`] (access point, namespace, credentials, TLS,
//! request timeout). Servers decide retry policies, body limits and batch sizes; clients adopt
//! them in a settings handshake on a Telemetry stream per broker. All errors are [`Error`];
//! errors the server reports carry its [`Code`].
//!
//! Layering: depends on `rocketlog-common` and `rocketlog-proto` only; it must never depend on
//! the broker or the store (its tests start real brokers as dev-dependencies).
//!
//! ```no_run
//! use std::time::Duration;
//! use rocketlog_client::{ClientConfig, FilterExpression, Message, Producer, SimpleConsumer};
//!
//! # async fn demo() -> Result<(), rocketlog_client::Error> {
//! let config = ClientConfig::new("127.0.0.1:8081")?;
//!
//! let producer = Producer::builder(config.clone()).topics(["greetings"]).build().await?;
//! producer.send(Message::builder("greetings").body("hello").build()?).await?;
//!
//! let consumer = SimpleConsumer::builder(config, "greeters")
//!     .subscribe("greetings", FilterExpression::all())
//!     .build()
//!     .await?;
//! for message in consumer.receive(8, Duration::from_secs(30)).await? {
//!     consumer.ack(&message).await?;
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod acker;
mod checker;
mod client_id;
mod config;
mod consumer;
mod convert;
mod core;
mod endpoints;
mod error;
mod message;
mod producer;
mod pull_consumer;
mod push_consumer;
mod retry;
mod route;
mod rpc;
mod session;
mod settings;
mod signing;
mod simple_consumer;
mod tls;
mod transaction;

pub use checker::{TransactionChecker, TransactionResolution};
pub use config::{
    ClientConfig, ClientConfigBuilder, Credentials, TlsConfig, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_ROUTE_REFRESH_INTERVAL,
};
pub use error::{Code, Error};
pub use message::{Message, MessageBuilder, MessageView, SendReceipt};
pub use producer::{Producer, ProducerBuilder, DEFAULT_MAX_ATTEMPTS};
pub use pull_consumer::{
    OffsetQuery, PullBatch, PullConsumer, PullConsumerBuilder, StartPosition, TopicQueue,
    MAX_PULL_BATCH,
};
pub use push_consumer::{
    HandlerError, MessageHandler, PushConsumer, PushConsumerBuilder, DEFAULT_CONCURRENCY,
};
pub use retry::{Backoff, RetryPolicy};
pub use route::MessageType;
pub use settings::FilterExpression;
pub use signing::{sign_request, SigningInterceptor};
pub use simple_consumer::{
    SimpleConsumer, SimpleConsumerBuilder, DEFAULT_AWAIT_DURATION, MAX_RECEIVE_BATCH,
};
pub use transaction::{Transaction, TransactionProducer, TransactionProducerBuilder};
