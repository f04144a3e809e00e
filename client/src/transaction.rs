//! Transactional messages: half messages made visible or discarded by `EndTransaction`, and
//! the checker that answers the server's questions about transactions left open.

use std::fmt;
use std::sync::Arc;

use rocketlog_proto::v2;

use crate::checker::{SharedChecker, TransactionChecker};
use crate::config::ClientConfig;
use crate::core::end_transaction;
use crate::core::ClientCore;
use crate::error::Error;
use crate::message::{Message, SendReceipt};
use crate::producer::{send_messages, start_core};
use crate::route::MessageType;

/// Sends transactional messages.
///
/// ```no_run
/// use rocketlog_client::{ClientConfig, Message, MessageView, TransactionProducer, TransactionResolution};
///
/// # async fn demo() -> Result<(), rocketlog_client::Error> {
/// let checker = |message: MessageView| async move {
///     // Look the order up in the local database.
///     let _ = message;
///     TransactionResolution::Commit
/// };
/// let config = ClientConfig::new("127.0.0.1:8081")?;
/// let producer = TransactionProducer::builder(config, checker)
///     .topics(["payments"])
///     .build()
///     .await?;
/// let tx = producer
///     .send(Message::builder("payments").body("charge 42").build()?)
///     .await?;
/// // ... do the local work of the transaction ...
/// tx.commit().await?;
/// producer.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TransactionProducer {
    core: Arc<ClientCore>,
}

impl fmt::Debug for TransactionProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransactionProducer")
            .field("client_id", &self.core.client_id)
            .finish()
    }
}

/// Builds a [`TransactionProducer`].
#[must_use = "a builder does nothing until build() is called"]
pub struct TransactionProducerBuilder {
    config: ClientConfig,
    topics: Vec<String>,
    checker: SharedChecker,
}

impl fmt::Debug for TransactionProducerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransactionProducerBuilder")
            .field("config", &self.config)
            .field("topics", &self.topics)
            .finish()
    }
}

impl TransactionProducerBuilder {
    /// Topics this producer sends to. The server asks a producer about open transactions only
    /// for topics it named, so name them here.
    pub fn topics<I, S>(mut self, topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.topics.extend(topics.into_iter().map(Into::into));
        self
    }

    /// Connects (see [`ProducerBuilder::build`](crate::ProducerBuilder::build)).
    pub async fn build(self) -> Result<TransactionProducer, Error> {
        let core = start_core(self.config, self.topics, None, Some(self.checker)).await?;
        Ok(TransactionProducer { core })
    }
}

impl TransactionProducer {
    /// A builder; `checker` answers the server's checks of open transactions.
    pub fn builder(
        config: ClientConfig,
        checker: impl TransactionChecker,
    ) -> TransactionProducerBuilder {
        TransactionProducerBuilder {
            config,
            topics: Vec::new(),
            checker: Arc::new(checker),
        }
    }

    /// Sends `message` as a half message, invisible to consumers until the returned
    /// transaction commits. Not retried (a retry would open a second transaction).
    pub async fn send(&self, message: Message) -> Result<Transaction, Error> {
        let mut receipts = send_messages(
            &self.core,
            std::slice::from_ref(&message),
            MessageType::Transaction,
        )
        .await?;
        let receipt = receipts.pop().ok_or_else(|| Error::Protocol {
            reason: "no receipt for the half message".into(),
            endpoint: self.core.config().access_point(),
        })?;
        let transaction_id = receipt
            .transaction_id
            .clone()
            .ok_or_else(|| Error::Protocol {
                reason: "the server returned no transaction id".into(),
                endpoint: receipt.endpoints.to_string(),
            })?;
        Ok(Transaction {
            core: self.core.clone(),
            topic: message.topic,
            transaction_id,
            receipt,
        })
    }

    /// Stops the producer (see [`Producer::shutdown`](crate::Producer::shutdown)).
    pub async fn shutdown(&self) {
        self.core.shutdown().await;
    }
}

/// An open transaction: its half message is stored but hidden.
///
/// Dropping it without [`commit`](Transaction::commit) or [`rollback`](Transaction::rollback)
/// leaves the decision to the [`TransactionChecker`] when the server asks.
pub struct Transaction {
    core: Arc<ClientCore>,
    topic: String,
    transaction_id: String,
    receipt: SendReceipt,
}

impl fmt::Debug for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("topic", &self.topic)
            .field("transaction_id", &self.transaction_id)
            .field("message_id", &self.receipt.message_id)
            .finish()
    }
}

impl Transaction {
    /// The receipt of the half message.
    pub fn receipt(&self) -> &SendReceipt {
        &self.receipt
    }

    /// The server's id of this transaction.
    pub fn transaction_id(&self) -> &str {
        &self.transaction_id
    }

    /// Makes the message visible to consumers.
    pub async fn commit(self) -> Result<(), Error> {
        self.end(v2::TransactionResolution::Commit).await
    }

    /// Discards the message.
    pub async fn rollback(self) -> Result<(), Error> {
        self.end(v2::TransactionResolution::Rollback).await
    }

    async fn end(self, resolution: v2::TransactionResolution) -> Result<(), Error> {
        end_transaction(
            &self.core,
            &self.receipt.endpoints,
            &self.topic,
            &self.receipt.message_id,
            &self.transaction_id,
            resolution,
            v2::TransactionSource::SourceClient,
        )
        .await
    }
}
