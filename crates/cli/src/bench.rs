//! `rocketlog bench`: load over the Rust SDK (the same client users get), with a progress bar
//! and a summary of msgs/s, MB/s and latency percentiles.
//!
//! Every run is bounded: it stops at `--duration` or after `--messages`, whichever comes first.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use rocketlog_client::{
    ClientConfig, FilterExpression, Message, MessageView, Producer, PushConsumer, SimpleConsumer,
};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Broker access point (`host:port`).
    #[arg(long, default_value = "127.0.0.1:8081", global = true)]
    endpoint: String,
    /// Topic to use (auto-created by a standalone broker).
    #[arg(long, default_value = "BenchTopic", global = true)]
    topic: String,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024, global = true)]
    size: usize,
    /// Longest run, seconds.
    #[arg(long, default_value_t = 10, global = true)]
    duration: u64,
    /// Hide the progress bar.
    #[arg(long, global = true)]
    quiet: bool,
    /// Give every client its own connections instead of sharing one per broker
    /// (`ClientConfigBuilder::share_connections(false)`).
    #[arg(long, global = true)]
    dedicated_connections: bool,
    /// Sign requests as this user (a broker with authentication on).
    #[arg(
        long,
        env = "ROCKETLOG_ACCESS_KEY",
        global = true,
        requires = "secret_key"
    )]
    access_key: Option<String>,
    /// Process id of the broker under load: the summary then prints the CPU time it and this
    /// tool spent per message (user + system, all threads, from `/proc`).
    #[arg(long, global = true)]
    broker_pid: Option<u32>,
    /// Secret key of --access-key.
    #[arg(
        long,
        env = "ROCKETLOG_SECRET_KEY",
        global = true,
        hide_env_values = true
    )]
    secret_key: Option<String>,
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Send messages as fast as the broker acknowledges them.
    Produce(ProduceArgs),
    /// Consume (optionally after preloading) and measure throughput and end-to-end latency.
    Consume(ConsumeArgs),
    /// Retry one send until the broker acknowledges it (for start-up timing: run it right
    /// after spawning the broker); prints the attempts and the Unix time of the acknowledgement.
    FirstSend(FirstSendArgs),
}

#[derive(Debug, Args)]
struct FirstSendArgs {
    /// Longest wait for one attempt (starting a producer and sending), milliseconds.
    #[arg(long, default_value_t = 1000)]
    attempt_timeout_ms: u64,
    /// Pause between failed attempts, milliseconds.
    #[arg(long, default_value_t = 10)]
    interval_ms: u64,
}

#[derive(Debug, Args)]
struct ProduceArgs {
    /// Separate Producer instances (each with its own session and route cache; they share
    /// connections unless `--dedicated-connections`).
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Sends in flight per producer.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Messages per SendMessage request.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Stop after this many messages.
    #[arg(long)]
    messages: Option<u64>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ConsumerKind {
    Push,
    Simple,
}

#[derive(Debug, Args)]
struct ConsumeArgs {
    /// Consumer group.
    #[arg(long, default_value = "BenchGroup")]
    group: String,
    /// Consumer API to drive.
    #[arg(long, value_enum, default_value = "push")]
    kind: ConsumerKind,
    /// Handlers (push) or receive loops (simple) in parallel.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Send this many messages first (64 in flight), then consume them.
    #[arg(long, default_value_t = 0)]
    preload: u64,
    /// Stop after this many messages.
    #[arg(long)]
    messages: Option<u64>,
}

/// Shared counters of one run.
struct Meter {
    count: AtomicU64,
    /// Messages handed out to senders (sent or in flight); never above `limit`.
    issued: AtomicU64,
    /// Slowest first send of any sender, µs (a stall at start shows here).
    first_send_us: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
    latency_us: Mutex<Histogram<u64>>,
    stop: AtomicBool,
    limit: u64,
    /// When the message budget was used up (the run's end, even if receivers still wait).
    finished: Mutex<Option<Instant>>,
    /// CPU seconds (this tool, the broker) at the start and at the end of the measured phase.
    cpu: Mutex<CpuWindow>,
}

/// CPU time of this tool and (when its pid was given) the broker, sampled around a phase.
#[derive(Debug, Default)]
struct CpuWindow {
    broker_pid: Option<u32>,
    start: Option<(f64, Option<f64>)>,
    end: Option<(f64, Option<f64>)>,
}

impl CpuWindow {
    fn sample(&self) -> Option<(f64, Option<f64>)> {
        let own = rocketlog_transport::process::cpu_seconds_of(None)?;
        let broker = self
            .broker_pid
            .and_then(|pid| rocketlog_transport::process::cpu_seconds_of(Some(pid)));
        Some((own, broker))
    }

    /// µs per message for (this tool, the broker) over the window.
    fn per_message(&self, n: u64) -> Option<(f64, Option<f64>)> {
        let ((own0, broker0), (own1, broker1)) = (self.start?, self.end?);
        let per = |a: f64, b: f64| (b - a).max(0.0) * 1e6 / n.max(1) as f64;
        let broker = match (broker0, broker1) {
            (Some(a), Some(b)) => Some(per(a, b)),
            _ => None,
        };
        Some((per(own0, own1), broker))
    }
}

impl Meter {
    fn new(limit: Option<u64>, broker_pid: Option<u32>) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Meter {
            count: AtomicU64::new(0),
            issued: AtomicU64::new(0),
            first_send_us: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            latency_us: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3)?),
            stop: AtomicBool::new(false),
            limit: limit.unwrap_or(u64::MAX),
            finished: Mutex::new(None),
            cpu: Mutex::new(CpuWindow {
                broker_pid,
                ..CpuWindow::default()
            }),
        }))
    }

    /// Marks the start of the measured phase for CPU accounting.
    fn cpu_start(&self) {
        let mut w = self.cpu.lock();
        w.start = w.sample();
    }

    /// Marks its end (before clients shut down).
    fn cpu_end(&self) {
        let mut w = self.cpu.lock();
        w.end = w.sample();
    }

    /// Takes tickets for `n` more messages; false once the message budget is spent, so a run
    /// with `--messages` sends at most that many (a failed send gives its tickets back).
    fn take(&self, n: u64) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        let before = self.issued.fetch_add(n, Ordering::Relaxed);
        if before.saturating_add(n) > self.limit {
            self.issued.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn give_back(&self, n: u64) {
        self.issued.fetch_sub(n, Ordering::Relaxed);
    }

    fn record(&self, n: u64, bytes: u64, latency: Duration) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.latency_us.lock().saturating_record(us);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if self.count.fetch_add(n, Ordering::Relaxed) + n >= self.limit {
            self.finished.lock().get_or_insert_with(Instant::now);
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    fn summary(&self, what: &str, elapsed: Duration) {
        let n = self.count.load(Ordering::Relaxed);
        let secs = elapsed.as_secs_f64().max(1e-9);
        let h = self.latency_us.lock();
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{what}: {n} msgs in {secs:.2} s = {:.0} msgs/s, {:.2} MB/s, errors {}",
            n as f64 / secs,
            self.bytes.load(Ordering::Relaxed) as f64 / secs / 1e6,
            self.errors.load(Ordering::Relaxed)
        );
        println!(
            "{what} latency ms: p50 {:.3}  p99 {:.3}  p999 {:.3}  max {:.3}",
            ms(0.50),
            ms(0.99),
            ms(0.999),
            h.max() as f64 / 1000.0
        );
        if let Some((own, broker)) = self.cpu.lock().per_message(n) {
            match broker {
                Some(b) => println!(
                    "{what} cpu per message: bench {own:.1} µs, broker {b:.1} µs (user + system)"
                ),
                None => println!("{what} cpu per message: bench {own:.1} µs (user + system)"),
            }
        }
        let first = self.first_send_us.load(Ordering::Relaxed);
        if first > 0 {
            println!(
                "{what} slowest first send of a sender: {:.3} ms",
                first as f64 / 1000.0
            );
        }
    }
}

fn progress(quiet: bool, what: &'static str, meter: Arc<Meter>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new_spinner()
        };
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        while !meter.stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let n = meter.count.load(Ordering::Relaxed);
            let rate = n as f64 / start.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "{what}: {n} msgs, {rate:.0} msgs/s, errors {}",
                meter.errors.load(Ordering::Relaxed)
            ));
            bar.tick();
        }
        bar.finish_and_clear();
    })
}

fn body(size: usize) -> Bytes {
    // A repeating pattern: incompressible enough for a storage benchmark, cheap to make.
    Bytes::from((0..size).map(|i| (i * 31 % 251) as u8).collect::<Vec<_>>())
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mut builder = ClientConfig::builder()
        .access_point(&args.endpoint)
        .share_connections(!args.dedicated_connections);
    if let (Some(ak), Some(sk)) = (&args.access_key, &args.secret_key) {
        builder = builder.credentials(rocketlog_client::Credentials::new(ak, sk));
    }
    let config = builder.build().context("client configuration")?;
    let deadline = Duration::from_secs(args.duration);
    match args.command {
        BenchCommand::Produce(p) => {
            let meter = Meter::new(p.messages, args.broker_pid)?;
            let bar = progress(args.quiet, "produce", Arc::clone(&meter));
            let elapsed =
                produce(&config, &args.topic, body(args.size), &p, deadline, &meter).await?;
            meter.stop.store(true, Ordering::Relaxed);
            let _ = bar.await;
            println!(
                "produce: {} producer(s) x {} in flight, batch {}, {} B bodies, {} connections",
                p.producers,
                p.concurrency,
                p.batch,
                args.size,
                if args.dedicated_connections {
                    "dedicated"
                } else {
                    "shared"
                }
            );
            meter.summary("produce", elapsed);
        }
        BenchCommand::Consume(c) => {
            if c.preload > 0 {
                let pre = Meter::new(Some(c.preload), None)?;
                let spec = ProduceArgs {
                    producers: 1,
                    concurrency: 64,
                    batch: 1,
                    messages: Some(c.preload),
                };
                let t = produce(
                    &config,
                    &args.topic,
                    body(args.size),
                    &spec,
                    Duration::from_secs(600),
                    &pre,
                )
                .await?;
                pre.summary("preload", t);
            }
            let meter = Meter::new(
                c.messages.or((c.preload > 0).then_some(c.preload)),
                args.broker_pid,
            )?;
            let bar = progress(args.quiet, "consume", Arc::clone(&meter));
            let elapsed = consume(&config, &args.topic, &c, deadline, &meter).await?;
            meter.stop.store(true, Ordering::Relaxed);
            let _ = bar.await;
            println!(
                "consume: {:?} consumer, concurrency {}",
                c.kind, c.concurrency
            );
            meter.summary(
                "consume (end-to-end latency = receive time - born time)",
                elapsed,
            );
        }
        BenchCommand::FirstSend(f) => {
            first_send(&config, &args.topic, args.size, &f, deadline).await?
        }
    }
    Ok(())
}

/// One attempt: a fresh producer (route query, settings) and one acknowledged send.
async fn send_one(config: &ClientConfig, topic: &str, body: Bytes) -> anyhow::Result<()> {
    let producer = Producer::builder(config.clone())
        .topics([topic])
        .build()
        .await?;
    let sent = producer
        .send(Message::builder(topic).body(body).build()?)
        .await;
    producer.shutdown().await;
    sent?;
    Ok(())
}

async fn first_send(
    config: &ClientConfig,
    topic: &str,
    size: usize,
    f: &FirstSendArgs,
    deadline: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let attempt_timeout = Duration::from_millis(f.attempt_timeout_ms.max(1));
    let mut last_error = String::from("no attempt");
    let mut attempt = 0u64;
    while start.elapsed() < deadline {
        attempt += 1;
        match tokio::time::timeout(attempt_timeout, send_one(config, topic, body(size))).await {
            Ok(Ok(())) => {
                let unix_ms = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or_default();
                println!(
                    "first-send: acknowledged after {attempt} attempt(s), {:.1} ms after this tool started, unix_ms={unix_ms}",
                    start.elapsed().as_secs_f64() * 1000.0
                );
                return Ok(());
            }
            Ok(Err(e)) => last_error = format!("{e:#}"),
            Err(_) => last_error = format!("attempt timed out after {attempt_timeout:?}"),
        }
        tokio::time::sleep(Duration::from_millis(f.interval_ms)).await;
    }
    anyhow::bail!(
        "no send acknowledged within {} s ({attempt} attempts); last error: {last_error}",
        deadline.as_secs()
    )
}

async fn produce(
    config: &ClientConfig,
    topic: &str,
    body: Bytes,
    p: &ProduceArgs,
    deadline: Duration,
    meter: &Arc<Meter>,
) -> anyhow::Result<Duration> {
    let mut producers = Vec::with_capacity(p.producers);
    let starting = Instant::now();
    for _ in 0..p.producers.max(1) {
        producers.push(
            Producer::builder(config.clone())
                .topics([topic])
                .build()
                .await
                .context("starting a producer")?,
        );
    }
    println!(
        "produce: {} producer(s) started in {:.1} ms",
        producers.len(),
        starting.elapsed().as_secs_f64() * 1000.0
    );
    meter.cpu_start();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for producer in &producers {
        for _ in 0..p.concurrency.max(1) {
            let (producer, meter, body, topic) = (
                producer.clone(),
                Arc::clone(meter),
                body.clone(),
                topic.to_owned(),
            );
            let batch = p.batch.max(1);
            tasks.spawn(async move {
                let mut first = true;
                while start.elapsed() < deadline && meter.take(batch as u64) {
                    let mut msgs = Vec::with_capacity(batch);
                    for _ in 0..batch {
                        match Message::builder(topic.as_str()).body(body.clone()).build() {
                            Ok(m) => msgs.push(m),
                            Err(e) => {
                                tracing::error!("building a message: {e}");
                                meter.stop.store(true, Ordering::Relaxed);
                                return;
                            }
                        }
                    }
                    let t = Instant::now();
                    let result = if batch == 1 {
                        match msgs.pop() {
                            Some(m) => producer.send(m).await.map(|_| ()),
                            None => Ok(()),
                        }
                    } else {
                        producer.send_batch(msgs).await.map(|_| ())
                    };
                    match result {
                        Ok(()) => {
                            let latency = t.elapsed();
                            if first {
                                first = false;
                                let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                                meter.first_send_us.fetch_max(us, Ordering::Relaxed);
                            }
                            meter.record(batch as u64, (batch * body.len()) as u64, latency)
                        }
                        Err(e) => {
                            meter.give_back(batch as u64);
                            if meter.errors.fetch_add(1, Ordering::Relaxed) < 5 {
                                tracing::warn!("send failed: {e}");
                            }
                        }
                    }
                }
            });
        }
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    meter.cpu_end();
    for producer in producers {
        producer.shutdown().await;
    }
    Ok(elapsed)
}

fn record_delivery(meter: &Meter, m: &MessageView) {
    let latency = m
        .born_time()
        .and_then(|b| SystemTime::now().duration_since(b).ok())
        .unwrap_or_default();
    meter.record(1, m.body().len() as u64, latency);
}

async fn consume(
    config: &ClientConfig,
    topic: &str,
    c: &ConsumeArgs,
    deadline: Duration,
    meter: &Arc<Meter>,
) -> anyhow::Result<Duration> {
    meter.cpu_start();
    let start = Instant::now();
    match c.kind {
        ConsumerKind::Push => {
            let handler_meter = Arc::clone(meter);
            let consumer = PushConsumer::builder(config.clone(), c.group.as_str())
                .subscribe(topic, FilterExpression::all())
                .concurrency(c.concurrency.max(1))
                .handler(move |m: MessageView| {
                    record_delivery(&handler_meter, &m);
                    async { Ok::<(), std::io::Error>(()) }
                })
                .build()
                .await
                .context("starting the push consumer")?;
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            while !meter.stop.load(Ordering::Relaxed) && start.elapsed() < deadline {
                tick.tick().await;
            }
            meter.cpu_end();
            let end = (*meter.finished.lock()).unwrap_or_else(Instant::now);
            let elapsed = end.saturating_duration_since(start);
            consumer.shutdown().await;
            Ok(elapsed)
        }
        ConsumerKind::Simple => {
            let consumer = SimpleConsumer::builder(config.clone(), c.group.as_str())
                .subscribe(topic, FilterExpression::all())
                .await_duration(Duration::from_secs(5))
                .build()
                .await
                .context("starting the simple consumer")?;
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..c.concurrency.max(1) {
                let (consumer, meter) = (consumer.clone(), Arc::clone(meter));
                tasks.spawn(async move {
                    while !meter.stop.load(Ordering::Relaxed) && start.elapsed() < deadline {
                        match consumer.receive(32, Duration::from_secs(30)).await {
                            Ok(batch) => {
                                for m in &batch {
                                    record_delivery(&meter, m);
                                    if consumer.ack(m).await.is_err() {
                                        meter.errors.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            }
                            Err(e) => {
                                if meter.errors.fetch_add(1, Ordering::Relaxed) < 5 {
                                    tracing::warn!("receive failed: {e}");
                                }
                            }
                        }
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
            meter.cpu_end();
            // Receivers may sit in a long poll after the last message; the run ended then.
            let end = (*meter.finished.lock()).unwrap_or_else(Instant::now);
            let elapsed = end.saturating_duration_since(start);
            consumer.shutdown().await;
            Ok(elapsed)
        }
    }
}
