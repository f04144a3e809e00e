//! `rocketlog admin`: talks to a broker's `rocketlog.admin.v1.Admin` service (on the client
//! port) and prints plain, aligned text. Errors are the broker's status message.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use rocketlog_client::SigningInterceptor;
use rocketlog_proto::admin::v1 as pb;
use rocketlog_proto::admin::v1::admin_client::AdminClient;
use rocketlog_proto::controller::v1 as cpb;
use rocketlog_proto::controller::v1::controller_client::ControllerClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Broker client address (`host:port`).
    #[arg(long, default_value = "127.0.0.1:8081", env = "ROCKETLOG_BROKER")]
    broker: String,
    /// Controller members for `controller` commands: nameserver addresses, comma separated.
    #[arg(
        long,
        default_value = "127.0.0.1:9876",
        env = "ROCKETLOG_CONTROLLER",
        value_delimiter = ','
    )]
    controller: Vec<String>,
    /// Access key to sign requests with: a super user of a broker with authentication on, or
    /// for `controller` commands the `[nameserver.auth]` access key of the nameservers.
    #[arg(long, env = "ROCKETLOG_ACCESS_KEY", requires = "secret_key")]
    access_key: Option<String>,
    /// Secret key of --access-key (prefer the environment variable to the flag).
    #[arg(long, env = "ROCKETLOG_SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Topics: create, update, delete, list.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Consumer groups: describe (lag per queue), reset offsets to a time.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Look up messages by message id or by business key.
    #[command(subcommand)]
    Message(MessageCommand),
    /// Broker offsets, uptime and counts.
    Stats,
    /// The nameservers this broker registers with (and whether they answer) and every broker
    /// they know.
    Cluster,
    /// Users (access key and secret key) of the broker's authentication.
    #[command(subcommand)]
    User(UserCommand),
    /// Access rules of users: allow or deny Pub/Sub on topics and groups.
    #[command(subcommand)]
    Acl(AclCommand),
    /// This broker (--broker): drain it for a restart, or resume.
    #[command(subcommand)]
    Broker(BrokerCommand),
    /// The controller in the nameservers (--controller): its leader and members, and per
    /// broker group the master, epoch, sync-state set and each replica's lag.
    #[command(subcommand)]
    Controller(ControllerCommand),
    /// Make this slave (--broker) the master of its group, in a new epoch starting at its log
    /// end. Under a controller, asks the controller to elect it. For when the master is stopped or fenced; refused while the master still streams
    /// to it, or when it lacks messages the group acknowledged (the reason says by how many
    /// bytes).
    Promote {
        /// Promote anyway: with the master still alive (two masters) or without
        /// acknowledged messages (lost).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BrokerCommand {
    /// Stop taking sends (producers get a retriable error and routes list this broker's
    /// queues read-only, so they move to other broker groups); sends in flight finish;
    /// consumers keep reading. Then restart it; a restarted broker takes sends again.
    Drain,
    /// Take sends again without a restart.
    Resume,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user, or replace its secret key and super-user flag (its rules stay).
    Add {
        access_key: String,
        /// Its secret key, 8 to 256 printable characters (prefer the environment variable).
        #[arg(long, env = "ROCKETLOG_USER_SECRET_KEY", hide_env_values = true)]
        secret: String,
        /// May do everything, the admin API included.
        #[arg(long = "super")]
        super_user: bool,
    },
    /// Delete a user.
    Delete { access_key: String },
    /// Users, their super-user flag and rules (secrets are never shown).
    List,
}

#[derive(Debug, Args)]
struct RuleSpec {
    access_key: String,
    #[arg(value_enum)]
    decision: RuleDecision,
    #[arg(value_enum)]
    action: RuleAction,
    #[arg(value_enum)]
    resource: RuleResource,
    /// An exact name, a prefix ending in `*` (quote it), or `*`.
    pattern: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RuleDecision {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RuleAction {
    Pub,
    Sub,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RuleResource {
    Topic,
    Group,
}

#[derive(Debug, Subcommand)]
enum AclCommand {
    /// Add a rule, e.g. `acl grant app allow pub topic 'orders-*'`.
    Grant(RuleSpec),
    /// Remove a rule (the same words it was granted with).
    Revoke(RuleSpec),
}

#[derive(Debug, Subcommand)]
enum ControllerCommand {
    /// Leader, members, and every broker group's master, epoch and sync-state set.
    Status,
    /// Make a replica the master of its group (from its sync-state set unless --unclean).
    Elect {
        broker_name: String,
        broker_id: u64,
        /// Allow a replica outside the sync-state set: acknowledged messages it lacks are
        /// lost.
        #[arg(long)]
        unclean: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    /// Create a topic, or update an existing one.
    Create(TopicSpec),
    /// Same as create: replaces the topic's settings.
    Update(TopicSpec),
    /// Delete a topic.
    Delete { name: String },
    /// List topics.
    List,
}

#[derive(Debug, Args)]
struct TopicSpec {
    name: String,
    /// Queue count (default: the broker's default).
    #[arg(long)]
    queues: Option<u32>,
    /// Accepted message types (repeat or comma separate).
    #[arg(
        long = "type",
        value_enum,
        value_delimiter = ',',
        default_value = "normal"
    )]
    types: Vec<MessageKind>,
    /// Permission.
    #[arg(long, value_enum, default_value = "read-write")]
    perm: Perm,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum MessageKind {
    Normal,
    Fifo,
    Delay,
    Transaction,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Perm {
    ReadWrite,
    Read,
    Write,
    None,
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// Every consumer group with state on this broker: its topics, lag, in-flight and
    /// dead-lettered messages.
    List,
    /// Offsets, lag and in-flight count per queue.
    Describe { group: String },
    /// Move a group's committed offsets on a topic to the first message stored at or after a time.
    ResetOffset {
        group: String,
        #[arg(long)]
        topic: String,
        /// Milliseconds since the Unix epoch.
        #[arg(long, conflicts_with = "ago")]
        timestamp_ms: Option<i64>,
        /// How far back from now, e.g. `90s`, `15m`, `2h`, `1d`.
        #[arg(long)]
        ago: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum MessageCommand {
    /// By message id.
    Id {
        message_id: String,
        /// Print bodies (up to 64 KiB each) as text.
        #[arg(long)]
        body: bool,
    },
    /// By business key within a topic.
    Key {
        topic: String,
        key: String,
        #[arg(long, default_value_t = 32)]
        max: u32,
        #[arg(long)]
        body: bool,
    },
}

type Admin = AdminClient<InterceptedService<Channel, SigningInterceptor>>;

async fn connect(addr: &str, signing: SigningInterceptor) -> anyhow::Result<Admin> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .with_context(|| format!("invalid broker address {addr:?}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach broker {addr}"))?;
    Ok(AdminClient::with_interceptor(channel, signing))
}

/// The broker's own words for a failed call.
fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let signing = SigningInterceptor::new(
        args.access_key
            .zip(args.secret_key)
            .map(|(ak, sk)| rocketlog_client::Credentials::new(ak, sk)),
    );
    if let AdminCommand::Controller(cmd) = args.command {
        return controller(&args.controller, cmd, &signing).await;
    }
    let mut client = connect(&args.broker, signing).await?;
    match args.command {
        AdminCommand::User(cmd) => user(&mut client, cmd).await,
        AdminCommand::Acl(cmd) => acl(&mut client, cmd).await,
        AdminCommand::Broker(cmd) => broker(&mut client, cmd).await,
        AdminCommand::Topic(cmd) => topic(&mut client, cmd).await,
        AdminCommand::Group(cmd) => group(&mut client, cmd).await,
        AdminCommand::Message(cmd) => message(&mut client, cmd).await,
        AdminCommand::Stats => stats(&mut client).await,
        AdminCommand::Cluster => cluster(&mut client).await,
        AdminCommand::Promote { force } => promote(&mut client, force).await,
        AdminCommand::Controller(_) => unreachable!("handled above"),
    }
}

type Controller = ControllerClient<InterceptedService<Channel, SigningInterceptor>>;

async fn controller_client(addr: &str, signing: &SigningInterceptor) -> anyhow::Result<Controller> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .with_context(|| format!("invalid controller address {addr:?}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("cannot reach controller member {addr}"))?;
    Ok(ControllerClient::with_interceptor(channel, signing.clone()))
}

/// Asks every member and prints the freshest view: the highest term, then the most applied
/// (a member restarted from disk may still believe it leads an old term).
async fn controller_status(members: &[String], signing: &SigningInterceptor) -> anyhow::Result<()> {
    let mut best: Option<cpb::ControllerStatus> = None;
    let mut errors = Vec::new();
    for addr in members {
        let answer = match controller_client(addr, signing).await {
            Ok(mut c) => c
                .status(cpb::StatusRequest {})
                .await
                .map(|r| r.into_inner())
                .map_err(status_error),
            Err(e) => Err(e),
        };
        match answer {
            Ok(s) => {
                let newer = best
                    .as_ref()
                    .is_none_or(|b| (s.term, s.last_applied) > (b.term, b.last_applied));
                if newer {
                    best = Some(s);
                }
            }
            Err(e) => errors.push(format!("{addr}: {e:#}")),
        }
    }
    match best {
        Some(s) => {
            print_controller_status(&s);
            for e in errors {
                println!("unreachable member {e}");
            }
            Ok(())
        }
        None => bail!("no controller member answered: {}", errors.join("; ")),
    }
}

async fn controller(
    members: &[String],
    cmd: ControllerCommand,
    signing: &SigningInterceptor,
) -> anyhow::Result<()> {
    if let ControllerCommand::Status = cmd {
        return controller_status(members, signing).await;
    }
    // Any member answers status; an election goes to the leader, which a member names.
    let mut order = members.to_vec();
    let mut last = anyhow::anyhow!("no controller address given");
    let mut tried = Vec::new();
    while let Some(addr) = order.first().cloned() {
        order.remove(0);
        if tried.contains(&addr) {
            continue;
        }
        tried.push(addr.clone());
        let mut client = match controller_client(&addr, signing).await {
            Ok(c) => c,
            Err(e) => {
                last = e;
                continue;
            }
        };
        let result = match &cmd {
            ControllerCommand::Status => match client.status(cpb::StatusRequest {}).await {
                Ok(r) => {
                    print_controller_status(&r.into_inner());
                    return Ok(());
                }
                Err(s) => s,
            },
            ControllerCommand::Elect {
                broker_name,
                broker_id,
                unclean,
            } => {
                let req = cpb::ElectRequest {
                    broker_name: broker_name.clone(),
                    broker_id: *broker_id,
                    unclean: *unclean,
                };
                match client.elect(req).await {
                    Ok(r) => {
                        let a = r.into_inner().assignment.unwrap_or_default();
                        println!(
                            "group {}: master {} in epoch {}, sync-state set {:?}",
                            a.broker_name, a.master_id, a.epoch, a.sync_state
                        );
                        return Ok(());
                    }
                    Err(s) => s,
                }
            }
        };
        if result.code() == tonic::Code::Unavailable {
            if let Some(hint) = result
                .metadata()
                .get("x-controller-leader")
                .and_then(|v| v.to_str().ok())
            {
                order.insert(0, hint.to_owned());
            }
            last = status_error(result);
            continue;
        }
        return Err(status_error(result));
    }
    Err(last)
}

fn print_controller_status(s: &cpb::ControllerStatus) {
    let leader = if s.leader_id == 0 {
        "none (election under way)".to_owned()
    } else {
        format!("{} at {}", s.leader_id, s.leader_address)
    };
    println!(
        "member {} (term {}, applied {}); leader {leader}",
        s.node_id, s.term, s.last_applied
    );
    for m in &s.members {
        println!(
            "  member {:<3} {:<24} {}",
            m.node_id,
            m.address,
            if m.leader { "leader" } else { "follower" }
        );
    }
    if s.groups.is_empty() {
        println!("no broker group has registered");
    }
    for g in &s.groups {
        let master_end = g
            .replicas
            .iter()
            .find(|r| r.broker_id == g.master_id)
            .map_or(0, |r| r.log_end);
        println!(
            "group {}: master {} epoch {} sync-state {:?}",
            g.broker_name,
            if g.master_id == 0 {
                "none".to_owned()
            } else {
                g.master_id.to_string()
            },
            g.epoch,
            g.sync_state
        );
        println!(
            "  {:<4} {:<22} {:<22} {:>14} {:>12} {:>10}",
            "id", "client", "replication", "log end", "lag bytes", "heard ms"
        );
        for r in &g.replicas {
            println!(
                "  {:<4} {:<22} {:<22} {:>14} {:>12} {:>10}",
                r.broker_id,
                r.client_address,
                r.replication_address,
                r.log_end,
                master_end.saturating_sub(r.log_end),
                r.heard_ms_ago
                    .map_or_else(|| "never".to_owned(), |ms| ms.to_string())
            );
        }
    }
}

async fn promote(client: &mut Admin, force: bool) -> anyhow::Result<()> {
    let r = client
        .promote(pb::PromoteRequest { force })
        .await
        .map_err(status_error)?
        .into_inner();
    println!(
        "promoted: master of epoch {}, starting at log offset {}",
        r.epoch, r.start_offset
    );
    if r.lost_bytes > 0 {
        println!(
            "lost: {} bytes of acknowledged messages this broker did not hold",
            r.lost_bytes
        );
    }
    Ok(())
}

fn to_wire(spec: TopicSpec) -> pb::TopicConfig {
    pb::TopicConfig {
        name: spec.name,
        queue_nums: spec.queues.unwrap_or(0),
        perm: match spec.perm {
            Perm::ReadWrite => pb::Permission::ReadWrite,
            Perm::Read => pb::Permission::Read,
            Perm::Write => pb::Permission::Write,
            Perm::None => pb::Permission::None,
        } as i32,
        message_types: spec
            .types
            .iter()
            .map(|t| match t {
                MessageKind::Normal => pb::MessageType::Normal,
                MessageKind::Fifo => pb::MessageType::Fifo,
                MessageKind::Delay => pb::MessageType::Delay,
                MessageKind::Transaction => pb::MessageType::Transaction,
            } as i32)
            .collect(),
    }
}

fn describe_topic(t: &pb::TopicConfig) -> String {
    let perm = pb::Permission::try_from(t.perm)
        .map(|p| p.as_str_name().to_owned())
        .unwrap_or_else(|_| t.perm.to_string());
    let types: Vec<String> = t
        .message_types
        .iter()
        .map(|m| {
            pb::MessageType::try_from(*m)
                .map(|m| m.as_str_name().to_owned())
                .unwrap_or_else(|_| m.to_string())
        })
        .collect();
    format!(
        "{:<40} queues={:<4} perm={:<10} types={}",
        t.name,
        t.queue_nums,
        perm,
        types.join(",")
    )
}

async fn topic(client: &mut Admin, cmd: TopicCommand) -> anyhow::Result<()> {
    match cmd {
        TopicCommand::Create(spec) | TopicCommand::Update(spec) => {
            let r = client
                .create_or_update_topic(pb::CreateOrUpdateTopicRequest {
                    topic: Some(to_wire(spec)),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let verb = if r.created { "created" } else { "updated" };
            if let Some(t) = r.topic {
                println!("{verb}: {}", describe_topic(&t));
            }
        }
        TopicCommand::Delete { name } => {
            client
                .delete_topic(pb::DeleteTopicRequest { name: name.clone() })
                .await
                .map_err(status_error)?;
            println!("deleted: {name}");
        }
        TopicCommand::List => {
            let r = client
                .list_topics(pb::ListTopicsRequest::default())
                .await
                .map_err(status_error)?
                .into_inner();
            for t in &r.topics {
                println!("{}", describe_topic(t));
            }
            println!("{} topic(s)", r.topics.len());
        }
    }
    Ok(())
}

/// Parses `90s`, `15m`, `2h`, `1d` (a bare number is seconds).
fn parse_ago(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a duration like 90s, 15m, 2h or 1d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        other => bail!("unknown duration unit {other:?} (use s, m, h or d)"),
    };
    Ok(Duration::from_secs(secs))
}

async fn group(client: &mut Admin, cmd: GroupCommand) -> anyhow::Result<()> {
    match cmd {
        GroupCommand::Describe { group } => {
            let r = client
                .describe_consumer_group(pb::DescribeConsumerGroupRequest { group })
                .await
                .map_err(status_error)?
                .into_inner();
            println!(
                "{:<40} {:>5} {:>14} {:>14} {:>10} {:>9}",
                "TOPIC", "QUEUE", "BROKER-OFFSET", "CONSUMER-OFF", "LAG", "INFLIGHT"
            );
            for q in &r.queues {
                println!(
                    "{:<40} {:>5} {:>14} {:>14} {:>10} {:>9}",
                    q.topic, q.queue_id, q.broker_offset, q.consumer_offset, q.lag, q.inflight
                );
            }
            println!(
                "group {}: total lag {}, in flight {}, dead-lettered {}",
                r.group, r.total_lag, r.total_inflight, r.dlq_messages
            );
        }
        GroupCommand::List => {
            let r = client
                .list_consumer_groups(pb::ListConsumerGroupsRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            println!(
                "{:<40} {:>10} {:>9} {:>9}  TOPICS",
                "GROUP", "LAG", "INFLIGHT", "DLQ"
            );
            for g in &r.groups {
                println!(
                    "{:<40} {:>10} {:>9} {:>9}  {}",
                    g.group,
                    g.total_lag,
                    g.total_inflight,
                    g.dlq_messages,
                    g.topics.join(",")
                );
            }
        }
        GroupCommand::ResetOffset {
            group,
            topic,
            timestamp_ms,
            ago,
        } => {
            let timestamp_ms = match (timestamp_ms, ago) {
                (Some(t), _) => t,
                (None, Some(a)) => {
                    let back = parse_ago(&a)?;
                    let at = SystemTime::now()
                        .checked_sub(back)
                        .unwrap_or(UNIX_EPOCH)
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default();
                    i64::try_from(at.as_millis()).unwrap_or(i64::MAX)
                }
                (None, None) => bail!("give --timestamp-ms or --ago"),
            };
            let r = client
                .reset_consumer_offset(pb::ResetConsumerOffsetRequest {
                    group: group.clone(),
                    topic: topic.clone(),
                    timestamp_ms,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            for o in &r.offsets {
                println!("{topic} queue {}: offset {}", o.queue_id, o.offset);
            }
            println!(
                "group {group} reset on {} queue(s) to {timestamp_ms} ms",
                r.offsets.len()
            );
        }
    }
    Ok(())
}

async fn message(client: &mut Admin, cmd: MessageCommand) -> anyhow::Result<()> {
    let (by, max, with_body) = match cmd {
        MessageCommand::Id { message_id, body } => (
            pb::lookup_message_request::By::MessageId(message_id),
            32,
            body,
        ),
        MessageCommand::Key {
            topic,
            key,
            max,
            body,
        } => (
            pb::lookup_message_request::By::Key(pb::KeyQuery { topic, key }),
            max,
            body,
        ),
    };
    let r = client
        .lookup_message(pb::LookupMessageRequest {
            by: Some(by),
            max,
            with_body,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    for m in &r.messages {
        println!(
            "{} topic={} queue={} queue_offset={} physical_offset={} tag={:?} keys={:?} stored_ms={} size={} reconsume={}",
            m.message_id, m.topic, m.queue_id, m.queue_offset, m.physical_offset, m.tag, m.keys,
            m.store_timestamp_ms, m.body_size, m.reconsume_times
        );
        for (k, v) in &m.properties {
            println!("    {k}={v}");
        }
        if !m.delay_state.is_empty() {
            println!(
                "    delayed: {} (deliver at {} ms)",
                m.delay_state, m.deliver_at_ms
            );
        }
        if !m.transaction_state.is_empty() {
            println!("    transaction: {}", m.transaction_state);
        }
        for d in &m.deliveries {
            println!("    group {}: {}", d.group, d.state);
        }
        if with_body {
            println!("    body: {}", String::from_utf8_lossy(&m.body));
        }
    }
    if r.messages.is_empty() {
        bail!("no message found");
    }
    Ok(())
}

async fn broker(client: &mut Admin, cmd: BrokerCommand) -> anyhow::Result<()> {
    let resume = matches!(cmd, BrokerCommand::Resume);
    let r = client
        .drain(pb::DrainRequest { resume })
        .await
        .map_err(status_error)?
        .into_inner();
    let now = if r.draining {
        "draining: no new sends, reads go on"
    } else {
        "taking sends"
    };
    let before = if r.was_draining == r.draining {
        " (unchanged)"
    } else {
        ""
    };
    println!("{now}{before}");
    Ok(())
}

async fn user(client: &mut Admin, cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add {
            access_key,
            secret,
            super_user,
        } => {
            let r = client
                .put_user(pb::PutUserRequest {
                    access_key: access_key.clone(),
                    secret_key: secret,
                    super_user,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let what = if r.created { "created" } else { "updated" };
            println!("user {access_key} {what}");
        }
        UserCommand::Delete { access_key } => {
            client
                .delete_user(pb::DeleteUserRequest {
                    access_key: access_key.clone(),
                })
                .await
                .map_err(status_error)?;
            println!("user {access_key} deleted");
        }
        UserCommand::List => {
            let users = client
                .list_users(pb::ListUsersRequest {})
                .await
                .map_err(status_error)?
                .into_inner()
                .users;
            if users.is_empty() {
                println!("no users");
            }
            for u in users {
                let flag = if u.super_user { "  super user" } else { "" };
                println!("{}{flag}", u.access_key);
                for r in &u.rules {
                    println!("  {}", describe_rule(r));
                }
            }
        }
    }
    Ok(())
}

fn describe_rule(r: &pb::AclRule) -> String {
    let decision = match pb::AclDecision::try_from(r.decision) {
        Ok(pb::AclDecision::Allow) => "allow",
        Ok(pb::AclDecision::Deny) => "deny",
        _ => "?",
    };
    let action = match pb::AclAction::try_from(r.action) {
        Ok(pb::AclAction::Pub) => "pub",
        Ok(pb::AclAction::Sub) => "sub",
        _ => "?",
    };
    let resource = match pb::AclResource::try_from(r.resource) {
        Ok(pb::AclResource::Topic) => "topic",
        Ok(pb::AclResource::Group) => "group",
        _ => "?",
    };
    format!("{decision} {action} {resource} {}", r.pattern)
}

fn rule_wire(spec: &RuleSpec) -> pb::AclRule {
    pb::AclRule {
        decision: match spec.decision {
            RuleDecision::Allow => pb::AclDecision::Allow,
            RuleDecision::Deny => pb::AclDecision::Deny,
        } as i32,
        action: match spec.action {
            RuleAction::Pub => pb::AclAction::Pub,
            RuleAction::Sub => pb::AclAction::Sub,
        } as i32,
        resource: match spec.resource {
            RuleResource::Topic => pb::AclResource::Topic,
            RuleResource::Group => pb::AclResource::Group,
        } as i32,
        pattern: spec.pattern.clone(),
    }
}

async fn acl(client: &mut Admin, cmd: AclCommand) -> anyhow::Result<()> {
    match cmd {
        AclCommand::Grant(spec) => {
            let rule = rule_wire(&spec);
            client
                .grant(pb::GrantRequest {
                    access_key: spec.access_key.clone(),
                    rule: Some(rule.clone()),
                })
                .await
                .map_err(status_error)?;
            println!("{}: {}", spec.access_key, describe_rule(&rule));
        }
        AclCommand::Revoke(spec) => {
            let rule = rule_wire(&spec);
            let removed = client
                .revoke(pb::RevokeRequest {
                    access_key: spec.access_key.clone(),
                    rule: Some(rule.clone()),
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .removed;
            if removed {
                println!("{}: revoked {}", spec.access_key, describe_rule(&rule));
            } else {
                println!("{}: had no rule {}", spec.access_key, describe_rule(&rule));
            }
        }
    }
    Ok(())
}

async fn cluster(client: &mut Admin) -> anyhow::Result<()> {
    let c = client
        .cluster_overview(pb::ClusterOverviewRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    for n in &c.nameservers {
        if n.reachable {
            println!("nameserver {:<24} reachable", n.address);
        } else {
            println!("nameserver {:<24} unreachable: {}", n.address, n.error);
        }
    }
    if c.nameservers.is_empty() {
        println!("no nameserver configured");
    }
    println!(
        "{:<12} {:<16} {:>4} {:<22} {:<22} {:>7}",
        "CLUSTER", "BROKER", "ID", "CLIENT", "REPLICATION", "TOPICS"
    );
    for b in &c.brokers {
        println!(
            "{:<12} {:<16} {:>4} {:<22} {:<22} {:>7}{}",
            b.cluster_name,
            b.broker_name,
            b.broker_id,
            b.client_address,
            b.replication_address,
            b.topic_count,
            if b.this_broker { "  (this broker)" } else { "" }
        );
    }
    Ok(())
}

async fn stats(client: &mut Admin) -> anyhow::Result<()> {
    let s = client
        .broker_stats(pb::BrokerStatsRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    println!("cluster          {}", s.cluster_name);
    println!("broker           {} (id {})", s.broker_name, s.broker_id);
    println!("uptime           {:.1} s", s.uptime_ms as f64 / 1000.0);
    println!("flush mode       {}", s.flush_mode);
    println!(
        "commit log       {} .. {} (flushed {})",
        s.min_log_offset, s.max_log_offset, s.flushed_offset
    );
    println!("topics / queues  {} / {}", s.topic_count, s.queue_count);
    println!(
        "role             {} ({} replication), epoch {}",
        s.role, s.replication_mode, s.epoch
    );
    for r in &s.slaves {
        println!(
            "slave {:<10} {} at {} (durable {}), lag {} bytes, last ack {} ms ago",
            r.broker_id, r.peer, r.log_end_offset, r.durable_offset, r.lag_bytes, r.last_ack_ms_ago
        );
    }
    if let Some(f) = &s.following {
        let state = if f.connected {
            "following"
        } else {
            "not following"
        };
        println!(
            "master           {} ({state}), master log end {}, behind by {} bytes",
            f.master_address,
            f.master_end_offset,
            f.master_end_offset.saturating_sub(f.log_end_offset)
        );
        println!(
            "acknowledged     up to {} (as last heard from the master); state copied at {}",
            f.acknowledged_offset, f.state_log_offset
        );
        if !f.last_error.is_empty() {
            println!("last error       {}", f.last_error);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_ago;
    use std::time::Duration;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_ago("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ago("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_ago("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_ago("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_ago("5").unwrap(), Duration::from_secs(5));
        assert!(parse_ago("x").is_err());
        assert!(parse_ago("5y").is_err());
    }
}
