//! The machinery every client type shares: routes, Telemetry sessions, heartbeats, shutdown.
//!
//! A `ClientCore` lives in an `Arc` held by the user-facing handles. Background tasks hold only
//! a `Weak`, so dropping every handle stops them; [`ClientCore::shutdown`] stops them at once
//! and tells the brokers.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::Mutex;
use rocketlog_proto::v2;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::checker::{SharedChecker, TransactionResolution};
use crate::client_id::next_client_id;
use crate::config::ClientConfig;
use crate::convert::{endpoints_to_proto, message_view_from_proto, queue_from_proto, resource};
use crate::endpoints::Endpoints;
use crate::error::Error;
use crate::retry::RetryPolicy;
use crate::route::TopicRoute;
use crate::rpc::Rpc;
use crate::session::{self, SessionHandle, SessionHost};
use crate::settings::{settings_to_proto, Adopted, Role};

/// Heartbeat period (the proxy drops clients silent for much longer).
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// Settings are re-sent this often so a restarted server learns them again.
const SETTINGS_INTERVAL: Duration = Duration::from_secs(300);
/// Extra time given to the settings handshake beyond the request timeout.
const HANDSHAKE_GRACE: Duration = Duration::from_secs(3);

pub(crate) struct ClientCore {
    /// This core, for tasks it spawns.
    me: Weak<ClientCore>,
    pub(crate) client_id: String,
    pub(crate) rpc: Rpc,
    pub(crate) role: Role,
    pub(crate) adopted: Adopted,
    /// The policy this client proposes in its settings (producers only).
    proposed_policy: RetryPolicy,
    routes: DashMap<String, Arc<TopicRoute>>,
    /// Serializes route fetches so a burst of first sends makes one QueryRoute per topic.
    route_fetch: tokio::sync::Mutex<()>,
    sessions: Mutex<HashMap<Endpoints, SessionHandle>>,
    pub(crate) checker: Option<SharedChecker>,
    pub(crate) cancel: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

impl std::fmt::Debug for ClientCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCore")
            .field("client_id", &self.client_id)
            .field("role", &self.role)
            .field("access_point", &self.config().access_point)
            .finish_non_exhaustive()
    }
}

impl Drop for ClientCore {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl ClientCore {
    /// Fetches the routes of the role's topics, completes the settings handshake with every
    /// broker in them, and starts heartbeats and route refreshes.
    pub(crate) async fn start(
        config: ClientConfig,
        role: Role,
        policy: RetryPolicy,
        user_max_attempts: Option<u32>,
        checker: Option<SharedChecker>,
    ) -> Result<Arc<ClientCore>, Error> {
        let client_id = next_client_id();
        let core = Arc::new_cyclic(|me| ClientCore {
            me: me.clone(),
            rpc: Rpc::new(config, &client_id),
            client_id,
            role,
            adopted: Adopted::new(policy.clone(), user_max_attempts),
            proposed_policy: policy,
            routes: DashMap::new(),
            route_fetch: tokio::sync::Mutex::new(()),
            sessions: Mutex::new(HashMap::new()),
            checker,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        for topic in core.role.topics() {
            if let Err(e) = core.fetch_route(&topic).await {
                core.shutdown().await;
                return Err(e);
            }
        }
        spawn_periodic(
            &core,
            HEARTBEAT_INTERVAL,
            |c| async move { c.heartbeat().await },
        );
        let route_refresh = core.config().route_refresh_interval;
        spawn_periodic(
            &core,
            route_refresh,
            |c| async move { c.refresh_routes().await },
        );
        spawn_periodic(
            &core,
            SETTINGS_INTERVAL,
            |c| async move { c.resend_settings() },
        );
        tracing::debug!(client_id = %core.client_id, "client started");
        Ok(core)
    }

    pub(crate) fn config(&self) -> &ClientConfig {
        self.rpc.config()
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.config().namespace
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.config().request_timeout
    }

    pub(crate) fn group_resource(&self) -> Option<v2::Resource> {
        self.role.group().map(|g| resource(self.namespace(), g))
    }

    pub(crate) fn ensure_running(&self) -> Result<(), Error> {
        if self.cancel.is_cancelled() {
            Err(Error::Shutdown)
        } else {
            Ok(())
        }
    }

    /// The settings this client sends now.
    pub(crate) fn settings(&self) -> v2::Settings {
        settings_to_proto(
            &self.role,
            self.namespace(),
            &self.config().access_point,
            self.request_timeout(),
            &self.proposed_policy,
        )
    }

    /// The cached route of `topic`, if any.
    pub(crate) fn cached_route(&self, topic: &str) -> Option<Arc<TopicRoute>> {
        self.routes.get(topic).map(|r| r.clone())
    }

    /// The cached route of `topic`, fetched on first use.
    pub(crate) async fn route(&self, topic: &str) -> Result<Arc<TopicRoute>, Error> {
        if let Some(r) = self.routes.get(topic) {
            return Ok(r.clone());
        }
        self.fetch_route(topic).await
    }

    /// Fetches `topic`'s route unless another caller just did, then opens sessions to any new
    /// broker in it.
    async fn fetch_route(&self, topic: &str) -> Result<Arc<TopicRoute>, Error> {
        let _guard = self.route_fetch.lock().await;
        if let Some(r) = self.routes.get(topic) {
            return Ok(r.clone());
        }
        self.query_route(topic).await
    }

    /// Drops the cached route after a routing error; the next use fetches it again.
    pub(crate) fn invalidate_route(&self, topic: &str) {
        self.routes.remove(topic);
    }

    async fn query_route(&self, topic: &str) -> Result<Arc<TopicRoute>, Error> {
        self.ensure_running()?;
        let access_point = &self.config().access_point;
        let request = v2::QueryRouteRequest {
            topic: Some(resource(self.namespace(), topic)),
            endpoints: Some(endpoints_to_proto(access_point)),
        };
        let response = self
            .rpc
            .unary(
                access_point,
                "QueryRoute",
                request,
                self.request_timeout(),
                |mut stub, r| async move { stub.query_route(r).await },
            )
            .await?;
        Error::from_status(response.status.as_ref(), access_point)?;
        let queues: Vec<_> = response
            .message_queues
            .iter()
            .filter_map(queue_from_proto)
            .collect();
        if queues.is_empty() {
            return Err(Error::NoRoute {
                topic: topic.to_owned(),
                reason: "the route lists no usable queue".into(),
            });
        }
        let route = Arc::new(TopicRoute::new(queues));
        self.open_sessions(&route.endpoints()).await?;
        let changed = self
            .routes
            .get(topic)
            .is_none_or(|old| !old.same_queues(&route));
        if changed {
            tracing::debug!(topic, queues = route.queues.len(), "route updated");
            self.routes.insert(topic.to_owned(), route.clone());
            Ok(route)
        } else {
            // Keep the old route and with it the round-robin cursors.
            Ok(self.routes.get(topic).map(|r| r.clone()).unwrap_or(route))
        }
    }

    /// Makes sure a Telemetry session runs to each endpoint and has had its settings answered.
    async fn open_sessions(&self, endpoints: &[Endpoints]) -> Result<(), Error> {
        let mut waits: Vec<(Endpoints, watch::Receiver<bool>)> = Vec::new();
        {
            let mut sessions = self.sessions.lock();
            for e in endpoints {
                let handle = sessions.entry(e.clone()).or_insert_with(|| {
                    let (handle, task) =
                        session::spawn(self.weak(), e.clone(), self.cancel.child_token());
                    self.tasks.spawn(task);
                    handle
                });
                waits.push((e.clone(), handle.handshake.clone()));
            }
        }
        let limit = self.request_timeout() + HANDSHAKE_GRACE;
        for (e, mut rx) in waits {
            let done = tokio::select! {
                r = tokio::time::timeout(limit, rx.wait_for(|ok| *ok)) => r,
                _ = self.cancel.cancelled() => return Err(Error::Shutdown),
            };
            match done {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Err(Error::Shutdown),
                Err(_) => {
                    return Err(Error::Timeout {
                        operation: "settings handshake",
                        timeout: limit,
                        endpoint: e.to_string(),
                    })
                }
            }
        }
        Ok(())
    }

    /// A weak handle for background tasks.
    pub(crate) fn weak(&self) -> Weak<ClientCore> {
        self.me.clone()
    }

    /// Every broker endpoint of every cached route.
    pub(crate) fn route_endpoints(&self) -> Vec<Endpoints> {
        let mut out: Vec<Endpoints> = Vec::new();
        for r in self.routes.iter() {
            for e in r.endpoints() {
                if !out.contains(&e) {
                    out.push(e);
                }
            }
        }
        out
    }

    async fn heartbeat(&self) {
        let request = v2::HeartbeatRequest {
            group: self.group_resource(),
            client_type: self.role.client_type() as i32,
        };
        for e in self.route_endpoints() {
            let result = self
                .rpc
                .unary(
                    &e,
                    "Heartbeat",
                    request.clone(),
                    self.request_timeout(),
                    |mut stub, r| async move { stub.heartbeat(r).await },
                )
                .await
                .and_then(|resp| Error::from_status(resp.status.as_ref(), &e));
            if let Err(err) = result {
                tracing::warn!(endpoint = %e, error = %err, "heartbeat failed");
            }
        }
    }

    async fn refresh_routes(&self) {
        let topics: Vec<String> = self.routes.iter().map(|r| r.key().clone()).collect();
        for topic in topics {
            if let Err(e) = self.query_route(&topic).await {
                tracing::warn!(topic, error = %e, "route refresh failed");
            }
        }
    }

    /// Sends the current settings on every session (after the topic list grew, and
    /// periodically).
    pub(crate) fn resend_settings(&self) {
        let sessions = self.sessions.lock();
        for handle in sessions.values() {
            handle.send_settings();
        }
    }

    /// Stops background work, tells every broker this client is leaving, and closes the
    /// Telemetry streams. Idempotent.
    pub(crate) async fn shutdown(&self) {
        if self.cancel.is_cancelled() {
            self.tasks.close();
            self.tasks.wait().await;
            return;
        }
        let request = v2::NotifyClientTerminationRequest {
            group: self.group_resource(),
        };
        for e in self.route_endpoints() {
            let result = self
                .rpc
                .unary(
                    &e,
                    "NotifyClientTermination",
                    request.clone(),
                    self.request_timeout(),
                    |mut stub, r| async move { stub.notify_client_termination(r).await },
                )
                .await
                .and_then(|resp| Error::from_status(resp.status.as_ref(), &e));
            if let Err(err) = result {
                tracing::debug!(endpoint = %e, error = %err, "termination notice failed");
            }
        }
        self.cancel.cancel();
        self.sessions.lock().clear();
        self.tasks.close();
        self.tasks.wait().await;
        tracing::debug!(client_id = %self.client_id, "client shut down");
    }
}

/// Runs `work` every `period` (first after one period) until the client is dropped or shut
/// down.
fn spawn_periodic<F, Fut>(core: &Arc<ClientCore>, period: Duration, work: F)
where
    F: Fn(Arc<ClientCore>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let weak = core.weak();
    let cancel = core.cancel.clone();
    core.tasks.spawn(async move {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = cancel.cancelled() => return,
            }
            let Some(core) = weak.upgrade() else { return };
            tokio::select! {
                _ = work(core) => {}
                _ = cancel.cancelled() => return,
            }
        }
    });
}

pub(crate) async fn end_transaction(
    core: &ClientCore,
    endpoints: &Endpoints,
    topic: &str,
    message_id: &str,
    transaction_id: &str,
    resolution: v2::TransactionResolution,
    source: v2::TransactionSource,
) -> Result<(), Error> {
    let request = v2::EndTransactionRequest {
        topic: Some(resource(core.namespace(), topic)),
        message_id: message_id.to_owned(),
        transaction_id: transaction_id.to_owned(),
        resolution: resolution as i32,
        source: source as i32,
        trace_context: String::new(),
    };
    let response = core
        .rpc
        .unary(
            endpoints,
            "EndTransaction",
            request,
            core.request_timeout(),
            |mut stub, r| async move { stub.end_transaction(r).await },
        )
        .await?;
    Error::from_status(response.status.as_ref(), endpoints)
}

impl SessionHost for ClientCore {
    fn rpc(&self) -> &Rpc {
        &self.rpc
    }

    fn request_timeout(&self) -> Duration {
        ClientCore::request_timeout(self)
    }

    fn settings(&self) -> v2::Settings {
        ClientCore::settings(self)
    }

    fn adopt(&self, settings: &v2::Settings) {
        self.adopted.apply(settings);
    }

    fn on_orphaned_transaction(
        &self,
        endpoints: Endpoints,
        command: v2::RecoverOrphanedTransactionCommand,
    ) {
        on_orphaned_transaction(self, endpoints, command);
    }
}

/// Answers a server's check of an open transaction: asks the checker, then ends the
/// transaction with `SOURCE_SERVER_CHECK` unless the answer is `Unknown`.
fn on_orphaned_transaction(
    core: &ClientCore,
    endpoints: Endpoints,
    command: v2::RecoverOrphanedTransactionCommand,
) {
    let Some(checker) = core.checker.clone() else {
        tracing::warn!(endpoint = %endpoints, "transaction check received, but no checker is set");
        return;
    };
    let Some(message) = command.message else {
        tracing::warn!(endpoint = %endpoints, "transaction check without a message");
        return;
    };
    let view = message_view_from_proto(message, Some(endpoints.clone()));
    let transaction_id = command.transaction_id;
    let weak = core.weak();
    let cancel = core.cancel.clone();
    core.tasks.spawn(async move {
        let resolution = tokio::select! {
            r = checker.check(view.clone()) => r,
            _ = cancel.cancelled() => return,
        };
        let resolution = match resolution {
            TransactionResolution::Commit => v2::TransactionResolution::Commit,
            TransactionResolution::Rollback => v2::TransactionResolution::Rollback,
            TransactionResolution::Unknown => return,
        };
        let Some(core) = weak.upgrade() else { return };
        let result = end_transaction(
            &core,
            &endpoints,
            view.topic(),
            view.message_id(),
            &transaction_id,
            resolution,
            v2::TransactionSource::SourceServerCheck,
        )
        .await;
        if let Err(e) = result {
            tracing::warn!(transaction_id, error = %e, "ending a checked transaction failed");
        }
    });
}
