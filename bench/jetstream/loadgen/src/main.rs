//! Load generator for NATS JetStream, the counterpart of `rocketlog bench` in
//! `bench/jetstream/run.sh`.
//!
//! * `produce`: P producers (each with its own NATS connection), each keeping N JetStream
//!   publishes in flight; every publish awaits its PubAck, like a RocketMQ SendMessage.
//! * `consume`: optionally preloads the stream, then drains it through a durable pull consumer
//!   with explicit acknowledgement, acking every message.
//!
//! Each command ends with one machine-readable line on stdout:
//! `RESULT msgs=<n> secs=<s> rate=<msgs/s> ...`. Every run is bounded in time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use clap::{ArgAction, Args, Parser, Subcommand};
use futures::StreamExt;

#[derive(Debug, Parser)]
#[command(
    name = "rocketlog-bench-jetstream",
    about = "Load generator for NATS JetStream"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish as fast as JetStream acknowledges, every publish awaiting its PubAck.
    Produce(ProduceArgs),
    /// Drain a stream through a durable pull consumer with explicit acks (after an optional
    /// preload).
    Consume(ConsumeArgs),
}

/// Where to connect and which stream to use (created if missing).
#[derive(Debug, Args)]
struct StreamArgs {
    /// NATS server URL.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    url: String,
    /// Stream name (created with file storage and one replica if it does not exist).
    #[arg(long, default_value = "BENCH")]
    stream: String,
    /// Subject filter of the stream when it has to be created.
    #[arg(long, default_value = "bench.>")]
    stream_subjects: String,
    /// Subject to publish to (must match the stream's subjects).
    #[arg(long, default_value = "bench.produce")]
    subject: String,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
}

#[derive(Debug, Args)]
struct ProduceArgs {
    #[command(flatten)]
    target: StreamArgs,
    /// Producers, each with its own connection.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Publishes in flight per producer.
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    /// Longest run, seconds.
    #[arg(long, default_value_t = 8.0)]
    duration: f64,
    /// Stop after this many acknowledged messages.
    #[arg(long)]
    messages: Option<u64>,
}

#[derive(Debug, Args)]
struct ConsumeArgs {
    #[command(flatten)]
    target: StreamArgs,
    /// Messages to consume (and to preload first with `--preload true`).
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Publish `--count` messages first (64 in flight, not measured).
    #[arg(long, action = ArgAction::Set, default_value_t = false)]
    preload: bool,
    /// Durable consumer name (a new one reads the stream from its first message).
    #[arg(long, default_value = "bench-consumer")]
    durable: String,
    /// Messages per pull request.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Longest consume phase, seconds.
    #[arg(long, default_value_t = 120.0)]
    duration: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Produce(args) => produce_command(args).await,
        Command::Consume(args) => consume_command(args).await,
    }
}

/// A repeating byte pattern, the same bodies `rocketlog bench` sends.
fn body(size: usize) -> Bytes {
    Bytes::from((0..size).map(|i| (i * 31 % 251) as u8).collect::<Vec<_>>())
}

async fn connect(url: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// Gets the stream, or creates it with file storage, one replica and default limits.
async fn ensure_stream(js: &jetstream::Context, t: &StreamArgs) -> anyhow::Result<stream::Stream> {
    js.get_or_create_stream(stream::Config {
        name: t.stream.clone(),
        subjects: vec![t.stream_subjects.clone()],
        storage: stream::StorageType::File,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .with_context(|| format!("creating or getting stream {}", t.stream))
}

/// Counters shared by the publishing tasks of one run.
struct Meter {
    acked: AtomicU64,
    /// Publishes handed out (acked or in flight); never above `limit`.
    issued: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
    limit: u64,
}

impl Meter {
    /// Takes a ticket for one more publish; false once the run is over or the budget spent.
    fn take(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        if self.issued.fetch_add(1, Ordering::Relaxed) >= self.limit {
            self.issued.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// Outcome of one publishing phase.
struct Published {
    msgs: u64,
    errors: u64,
    elapsed: Duration,
    /// Publish-to-PubAck latencies, µs, sorted.
    latencies_us: Vec<u32>,
}

/// Runs `producers` connections x `in_flight` publishing loops until `duration` has passed or
/// `limit` messages are acknowledged; each loop publishes and awaits the PubAck before the next.
async fn publish_load(
    t: &StreamArgs,
    producers: usize,
    in_flight: usize,
    duration: Duration,
    limit: u64,
) -> anyhow::Result<Published> {
    let payload = body(t.size);
    // Connect every producer first, so that connection set-up is not part of the run.
    let mut contexts = Vec::with_capacity(producers);
    for _ in 0..producers.max(1) {
        contexts.push(jetstream::new(connect(&t.url).await?));
    }
    let meter = Arc::new(Meter {
        acked: AtomicU64::new(0),
        issued: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        limit,
    });
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for js in &contexts {
        for _ in 0..in_flight.max(1) {
            let (js, meter, payload, subject) = (
                js.clone(),
                Arc::clone(&meter),
                payload.clone(),
                t.subject.clone(),
            );
            tasks.spawn(async move {
                let mut latencies = Vec::new();
                while start.elapsed() < duration && meter.take() {
                    let sent = Instant::now();
                    let result = match js.publish(subject.clone(), payload.clone()).await {
                        Ok(ack) => ack.await.map(|_| ()),
                        Err(e) => Err(e),
                    };
                    match result {
                        Ok(()) => {
                            let us = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                            latencies.push(us);
                            if meter.acked.fetch_add(1, Ordering::Relaxed) + 1 >= meter.limit {
                                meter.stop.store(true, Ordering::Relaxed);
                            }
                        }
                        Err(e) => {
                            meter.issued.fetch_sub(1, Ordering::Relaxed);
                            if meter.errors.fetch_add(1, Ordering::Relaxed) < 5 {
                                eprintln!("publish failed: {e}");
                            }
                            // Do not spin on a broken connection.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                latencies
            });
        }
    }
    let mut latencies_us = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        latencies_us.extend(joined.context("a publishing task failed")?);
    }
    let elapsed = start.elapsed();
    for js in contexts {
        // Best effort: the run is over, a failed flush changes no figure.
        let _ = js.client().flush().await;
    }
    latencies_us.sort_unstable();
    Ok(Published {
        msgs: meter.acked.load(Ordering::Relaxed),
        errors: meter.errors.load(Ordering::Relaxed),
        elapsed,
        latencies_us,
    })
}

/// The value at quantile `q` (0..=1) of sorted values, 0 when there are none.
fn quantile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn secs(d: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(d).map_err(|e| anyhow::anyhow!("bad duration {d}: {e}"))
}

async fn produce_command(args: ProduceArgs) -> anyhow::Result<()> {
    let setup = jetstream::new(connect(&args.target.url).await?);
    ensure_stream(&setup, &args.target).await?;
    let run = publish_load(
        &args.target,
        args.producers,
        args.in_flight,
        secs(args.duration)?,
        args.messages.unwrap_or(u64::MAX),
    )
    .await?;
    let s = run.elapsed.as_secs_f64().max(1e-9);
    println!(
        "produce: {} producer(s) x {} in flight, {} B bodies, one connection per producer",
        args.producers, args.in_flight, args.target.size
    );
    println!(
        "RESULT msgs={} secs={:.3} rate={:.0} p50_us={} p99_us={} max_us={} errors={}",
        run.msgs,
        s,
        run.msgs as f64 / s,
        quantile(&run.latencies_us, 0.50),
        quantile(&run.latencies_us, 0.99),
        run.latencies_us.last().copied().unwrap_or(0),
        run.errors
    );
    if run.msgs == 0 {
        bail!("no publish was acknowledged");
    }
    Ok(())
}

async fn consume_command(args: ConsumeArgs) -> anyhow::Result<()> {
    let client = connect(&args.target.url).await?;
    let js = jetstream::new(client.clone());
    let stream = ensure_stream(&js, &args.target).await?;
    if args.preload {
        let pre = publish_load(&args.target, 1, 64, Duration::from_secs(600), args.count).await?;
        let s = pre.elapsed.as_secs_f64().max(1e-9);
        println!(
            "PRELOAD msgs={} secs={:.3} rate={:.0} errors={}",
            pre.msgs,
            s,
            pre.msgs as f64 / s,
            pre.errors
        );
        if pre.msgs < args.count {
            bail!("preloaded only {} of {} messages", pre.msgs, args.count);
        }
    }

    // The consume phase: a durable pull consumer with explicit acks from the first message,
    // pulling in batches (pipelined pull requests), every message acked with a plain ack.
    let start = Instant::now();
    let pull = stream
        .get_or_create_consumer(
            &args.durable,
            consumer::pull::Config {
                durable_name: Some(args.durable.clone()),
                ack_policy: consumer::AckPolicy::Explicit,
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("creating consumer {}", args.durable))?;
    let mut messages = pull
        .stream()
        .max_messages_per_batch(args.batch.max(1))
        .messages()
        .await
        .context("starting the pull")?;
    let deadline = secs(args.duration)?;
    let (mut received, mut errors) = (0u64, 0u64);
    while received < args.count {
        let left = deadline.saturating_sub(start.elapsed());
        if left.is_zero() {
            eprintln!("consume: stopped at --duration with {received} messages");
            break;
        }
        match tokio::time::timeout(left, messages.next()).await {
            // Timed out: the loop ends on the deadline check above.
            Err(_) => continue,
            Ok(None) => {
                eprintln!("consume: the pull ended after {received} messages");
                break;
            }
            Ok(Some(Ok(message))) => {
                message
                    .ack()
                    .await
                    .map_err(|e| anyhow::anyhow!("ack failed: {e}"))?;
                received += 1;
            }
            Ok(Some(Err(e))) => {
                errors += 1;
                if errors <= 5 {
                    eprintln!("pull failed: {e}");
                }
            }
        }
    }
    // Acks are plain publishes: the phase ends once they have all left the client.
    client.flush().await.context("flushing the acks")?;
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    drop(messages);
    // Outside the measured phase: give the server up to 2 s to apply the last acks, so that
    // `ack_pending` shows whether every ack arrived.
    let mut ack_pending = "?".to_string();
    for _ in 0..40 {
        match pull.get_info().await {
            Ok(info) => {
                ack_pending = info.num_ack_pending.to_string();
                if info.num_ack_pending == 0 {
                    break;
                }
            }
            Err(_) => ack_pending = "?".to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "consume: durable pull consumer {}, explicit ack, batches of {}",
        args.durable, args.batch
    );
    println!(
        "RESULT msgs={received} secs={elapsed:.3} rate={:.0} errors={errors} ack_pending={ack_pending}",
        received as f64 / elapsed
    );
    if received == 0 {
        bail!("no message was consumed");
    }
    Ok(())
}
