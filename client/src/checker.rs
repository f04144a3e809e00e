//! What a transactional producer's application supplies: the checker that decides transactions
//! the producer left open, asked when the server checks one.

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::message::MessageView;

/// The outcome of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionResolution {
    /// Make the message visible to consumers.
    Commit,
    /// Discard the message.
    Rollback,
    /// Not decided yet: the server asks again later.
    Unknown,
}

/// Decides transactions the producer left open (it crashed, or never committed).
///
/// The server sends the half message; the checker looks up the local transaction and answers.
/// Any `Fn(MessageView) -> impl Future<Output = TransactionResolution>` is a checker.
pub trait TransactionChecker: Send + Sync + 'static {
    /// The resolution of the transaction that sent `message`.
    fn check(&self, message: MessageView) -> BoxFuture<'static, TransactionResolution>;
}

impl<F, Fut> TransactionChecker for F
where
    F: Fn(MessageView) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = TransactionResolution> + Send + 'static,
{
    fn check(&self, message: MessageView) -> BoxFuture<'static, TransactionResolution> {
        Box::pin(self(message))
    }
}

pub(crate) type SharedChecker = Arc<dyn TransactionChecker>;
