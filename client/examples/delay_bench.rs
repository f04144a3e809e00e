//! Delayed-message load through the Rust SDK, bounded in count and time; prints figures.
//!
//! ```text
//! delay_bench <endpoint> schedule <count> <concurrency> <delay_secs> <spread_secs>
//!     sends <count> DELAY messages due <delay_secs> + up to <spread_secs> ahead: scheduled msgs/s
//! delay_bench <endpoint> lateness <count> <rate_per_sec> <delay_ms>
//!     light load: <rate_per_sec> messages a second, each due <delay_ms> after its send; a
//!     consumer measures lateness (receive time - delivery time): p50/p99/max
//! delay_bench <endpoint> burst <count> <concurrency> <lead_secs>
//!     <count> messages all due at one instant <lead_secs> ahead; consumers measure how fast
//!     they are delivered (msgs/s) and their lateness
//! delay_bench <endpoint> drain <topic> <idle_secs>
//!     a new consumer group reads <topic> until nothing came for <idle_secs>: total and distinct
//!     message ids (a duplicate delivery shows as total > distinct)
//! ```
//!
//! `DELAY_BENCH_TOPIC` names the topic of `schedule` (default: a unique name, printed).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use rocketlog_client::{ClientConfig, FilterExpression, Message, Producer, SimpleConsumer};
use tokio::sync::Mutex;

/// Longest any mode runs.
const HARD_LIMIT: Duration = Duration::from_secs(900);
const CONSUMERS: usize = 4;

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> anyhow::Result<T> {
    args.get(i)
        .with_context(|| format!("missing <{what}>"))?
        .parse()
        .map_err(|_| anyhow::anyhow!("bad <{what}>: {:?}", args[i]))
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn ms_since_epoch(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn quantiles(name: &str, mut v: Vec<i64>) {
    if v.is_empty() {
        println!("{name}: no samples");
        return;
    }
    v.sort_unstable();
    let q = |p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
    println!(
        "{name}: n={} min={} p50={} p90={} p99={} max={} (ms)",
        v.len(),
        v[0],
        q(0.50),
        q(0.90),
        q(0.99),
        v[v.len() - 1]
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let endpoint: String = arg(&args, 1, "endpoint")?;
    let mode: String = arg(&args, 2, "mode")?;
    let config = ClientConfig::new(&endpoint)?;
    let run = async {
        match mode.as_str() {
            "schedule" => {
                schedule(
                    config,
                    arg(&args, 3, "count")?,
                    arg(&args, 4, "concurrency")?,
                    arg(&args, 5, "delay_secs")?,
                    arg(&args, 6, "spread_secs")?,
                )
                .await
            }
            "lateness" => {
                lateness(
                    config,
                    arg(&args, 3, "count")?,
                    arg(&args, 4, "rate_per_sec")?,
                    arg(&args, 5, "delay_ms")?,
                )
                .await
            }
            "burst" => {
                burst(
                    config,
                    arg(&args, 3, "count")?,
                    arg(&args, 4, "concurrency")?,
                    arg(&args, 5, "lead_secs")?,
                )
                .await
            }
            "drain" => drain(config, arg(&args, 3, "topic")?, arg(&args, 4, "idle_secs")?).await,
            other => bail!("unknown mode {other:?}: schedule, lateness, burst or drain"),
        }
    };
    tokio::time::timeout(HARD_LIMIT, run)
        .await
        .context("the bench hit its hard time limit")?
}

/// Sends `count` messages with `concurrency` tasks; message `i` is due at `due(i)`.
async fn send_all(
    producer: &Producer,
    topic: &str,
    count: usize,
    concurrency: usize,
    due: impl Fn(usize) -> SystemTime + Send + Sync + 'static,
) -> anyhow::Result<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let due = Arc::new(due);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (producer, topic, next, due) = (
            producer.clone(),
            topic.to_owned(),
            next.clone(),
            due.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return anyhow::Ok(());
                }
                let msg = Message::builder(&topic)
                    .body(vec![b'x'; 128])
                    .delivery_time(due(i))
                    .build()?;
                producer.send(msg).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed())
}

async fn schedule(
    config: ClientConfig,
    count: usize,
    concurrency: usize,
    delay_secs: u64,
    spread_secs: u64,
) -> anyhow::Result<()> {
    let topic = std::env::var("DELAY_BENCH_TOPIC").unwrap_or_else(|_| unique("delay-bench"));
    println!("topic {topic}");
    let producer = Producer::builder(config).topics([&topic]).build().await?;
    let base = SystemTime::now() + Duration::from_secs(delay_secs);
    let spread_ms = (spread_secs * 1000).max(1);
    let took = send_all(&producer, &topic, count, concurrency, move |i| {
        base + Duration::from_millis((i as u64 * 7919) % spread_ms)
    })
    .await?;
    println!(
        "scheduled {count} delayed messages (due in {delay_secs}..{} s) in {:.2} s: {:.0} msgs/s (concurrency {concurrency})",
        delay_secs + spread_secs,
        took.as_secs_f64(),
        count as f64 / took.as_secs_f64()
    );
    producer.shutdown().await;
    Ok(())
}

/// Receives `count` messages with `CONSUMERS` receive loops; returns per-message lateness (ms)
/// and when the last one arrived.
async fn collect(
    consumer: SimpleConsumer,
    count: usize,
    limit: Duration,
) -> anyhow::Result<(Vec<i64>, SystemTime)> {
    let consumer = Arc::new(consumer);
    let samples = Arc::new(Mutex::new((Vec::with_capacity(count), UNIX_EPOCH)));
    let got = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + limit;
    let mut tasks = Vec::new();
    for _ in 0..CONSUMERS {
        let (consumer, samples, got) = (consumer.clone(), samples.clone(), got.clone());
        tasks.push(tokio::spawn(async move {
            while got.load(Ordering::Relaxed) < count && Instant::now() < deadline {
                let batch = consumer.receive(32, Duration::from_secs(60)).await?;
                let now = SystemTime::now();
                let mut late = Vec::with_capacity(batch.len());
                for m in &batch {
                    if let Some(due) = m.delivery_time() {
                        late.push(ms_since_epoch(now) - ms_since_epoch(due));
                    }
                }
                got.fetch_add(batch.len(), Ordering::Relaxed);
                {
                    let mut s = samples.lock().await;
                    s.0.extend(late);
                    if !batch.is_empty() {
                        s.1 = s.1.max(now);
                    }
                }
                for m in &batch {
                    consumer.ack(m).await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let n = got.load(Ordering::Relaxed);
    if n < count {
        bail!("only {n} of {count} messages arrived within {limit:?}");
    }
    let s = samples.lock().await;
    Ok((s.0.clone(), s.1))
}

async fn consumer_for(config: ClientConfig, topic: &str) -> anyhow::Result<SimpleConsumer> {
    Ok(SimpleConsumer::builder(config, unique("delay-bench-group"))
        .subscribe(topic, FilterExpression::all())
        .await_duration(Duration::from_secs(5))
        .build()
        .await?)
}

async fn lateness(
    config: ClientConfig,
    count: usize,
    rate_per_sec: u64,
    delay_ms: u64,
) -> anyhow::Result<()> {
    let topic = unique("delay-lateness");
    let consumer = consumer_for(config.clone(), &topic).await?;
    let producer = Producer::builder(config).topics([&topic]).build().await?;
    let receiving = tokio::spawn(collect(
        consumer,
        count,
        Duration::from_millis(delay_ms)
            + Duration::from_secs(count as u64 / rate_per_sec.max(1) + 60),
    ));
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate_per_sec.max(1)));
    for _ in 0..count {
        tick.tick().await;
        let due = SystemTime::now() + Duration::from_millis(delay_ms);
        producer
            .send(
                Message::builder(&topic)
                    .body("x")
                    .delivery_time(due)
                    .build()?,
            )
            .await?;
    }
    let (late, _) = receiving.await??;
    println!(
        "light load: {count} messages at {rate_per_sec}/s, each due {delay_ms} ms after its send"
    );
    quantiles("lateness (receive time - delivery time)", late);
    producer.shutdown().await;
    Ok(())
}

async fn burst(
    config: ClientConfig,
    count: usize,
    concurrency: usize,
    lead_secs: u64,
) -> anyhow::Result<()> {
    let topic = unique("delay-burst");
    let consumer = consumer_for(config.clone(), &topic).await?;
    let producer = Producer::builder(config).topics([&topic]).build().await?;
    let due = SystemTime::now() + Duration::from_secs(lead_secs);
    let receiving = tokio::spawn(collect(
        consumer,
        count,
        Duration::from_secs(lead_secs + 300),
    ));
    let took = send_all(&producer, &topic, count, concurrency, move |_| due).await?;
    println!(
        "scheduled {count} messages due at one instant in {:.2} s: {:.0} msgs/s",
        took.as_secs_f64(),
        count as f64 / took.as_secs_f64()
    );
    if SystemTime::now() >= due {
        println!("warning: scheduling ended after the due time; raise <lead_secs>");
    }
    let (late, last) = receiving.await??;
    let span = last.duration_since(due).unwrap_or_default();
    println!(
        "delivered {count} messages {:.2} s after their common due time: {:.0} msgs/s end to end (timer + consumers)",
        span.as_secs_f64(),
        count as f64 / span.as_secs_f64().max(0.001)
    );
    quantiles("lateness (receive time - delivery time)", late);
    producer.shutdown().await;
    Ok(())
}

async fn drain(config: ClientConfig, topic: String, idle_secs: u64) -> anyhow::Result<()> {
    let consumer = consumer_for(config, &topic).await?;
    let mut ids = std::collections::HashSet::new();
    let mut total = 0usize;
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(idle_secs) {
        let batch = consumer.receive(32, Duration::from_secs(60)).await?;
        if !batch.is_empty() {
            last = Instant::now();
        }
        for m in &batch {
            total += 1;
            ids.insert(m.message_id().to_owned());
            consumer.ack(m).await?;
        }
    }
    println!(
        "drained {topic}: {total} messages, {} distinct ids, {} duplicates",
        ids.len(),
        total - ids.len()
    );
    consumer.shutdown().await;
    Ok(())
}
