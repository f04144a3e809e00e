//! Transactional send + commit throughput: `concurrency` tasks each send a half message and
//! commit it, until `messages` transactions are done or `seconds` pass (bounded in count and
//! time). With `--normal`, plain sends of the same messages instead, for comparison.
//!
//! `cargo run --release -p rocketlog-client --example transaction_bench -- \
//!     [--endpoint 127.0.0.1:8081] [--messages 20000] [--concurrency 32] [--seconds 30] \
//!     [--body 1024] [--normal]`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use rocketlog_client::{
    ClientConfig, Message, MessageView, Producer, TransactionProducer, TransactionResolution,
};
use rocketlog_proto::admin::v1 as admin;

struct Args {
    endpoint: String,
    messages: u64,
    concurrency: u64,
    seconds: u64,
    body: usize,
    normal: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        endpoint: "127.0.0.1:8081".into(),
        messages: 20_000,
        concurrency: 32,
        seconds: 30,
        body: 1024,
        normal: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--endpoint" => a.endpoint = value()?,
            "--messages" => a.messages = value()?.parse()?,
            "--concurrency" => a.concurrency = value()?.parse()?,
            "--seconds" => a.seconds = value()?.parse()?,
            "--body" => a.body = value()?.parse()?,
            "--normal" => a.normal = true,
            other => bail!("unknown argument {other}"),
        }
    }
    if a.concurrency == 0 || a.messages == 0 || a.seconds == 0 || a.seconds > 600 {
        bail!("--messages and --concurrency must be positive, --seconds in 1..=600");
    }
    Ok(a)
}

enum Sender {
    Tx(TransactionProducer),
    Plain(Producer),
}

impl Sender {
    async fn one(&self, m: Message) -> anyhow::Result<()> {
        match self {
            Sender::Tx(p) => p.send(m).await?.commit().await?,
            Sender::Plain(p) => {
                p.send(m).await?;
            }
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let topic = format!("txbench-{nanos}");
    let kind = if a.normal {
        admin::MessageType::Normal
    } else {
        admin::MessageType::Transaction
    };
    let mut client =
        admin::admin_client::AdminClient::connect(format!("http://{}", a.endpoint)).await?;
    client
        .create_or_update_topic(admin::CreateOrUpdateTopicRequest {
            topic: Some(admin::TopicConfig {
                name: topic.clone(),
                queue_nums: 8,
                perm: admin::Permission::ReadWrite as i32,
                message_types: vec![kind as i32],
            }),
        })
        .await?;
    let config = ClientConfig::new(&a.endpoint)?;
    let sender = Arc::new(if a.normal {
        Sender::Plain(Producer::builder(config).topics([&topic]).build().await?)
    } else {
        let checker = |_m: MessageView| async { TransactionResolution::Rollback };
        Sender::Tx(
            TransactionProducer::builder(config, checker)
                .topics([&topic])
                .build()
                .await?,
        )
    });

    let body = vec![b'x'; a.body];
    let issued = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency {
        let (sender, issued, failed) = (sender.clone(), issued.clone(), failed.clone());
        let (topic, body, total) = (topic.clone(), body.clone(), a.messages);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < total {
                let m = Message::builder(&topic).body(body.clone()).build()?;
                let t0 = Instant::now();
                match sender.one(m).await {
                    Ok(()) => latencies.push(t0.elapsed()),
                    Err(e) => {
                        if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("first failure: {e:#}");
                        }
                    }
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let done = latencies.len() as f64;
    println!(
        "mode={} messages={} failed={} concurrency={} body={}B elapsed={:.2}s throughput={:.0} msgs/s latency_ms p50={:.2} p99={:.2} max={:.2}",
        if a.normal { "normal-send" } else { "transactional send+commit" },
        latencies.len(),
        failed.load(Ordering::Relaxed),
        a.concurrency,
        a.body,
        elapsed.as_secs_f64(),
        done / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        pct(1.0),
    );
    match &*sender {
        Sender::Tx(p) => p.shutdown().await,
        Sender::Plain(p) => p.shutdown().await,
    }
    Ok(())
}
