//! FIFO message groups.

use std::collections::{HashMap, HashSet};

use rocketlog_common::QueueOffset;

use super::*;

#[tokio::test]
async fn fifo_never_releases_later_message_of_a_group_in_flight() {
    let e = env();
    let msgs = [
        ("A", "a1"),
        ("B", "b1"),
        ("A", "a2"),
        ("B", "b2"),
        ("A", "a3"),
        ("C", "c1"),
    ];
    for (g, body) in msgs {
        e.send(TOPIC, 0, None, Some(g), body);
    }
    e.wait_dispatched(TOPIC, 0, 6).await;
    let mut r = req();
    r.fifo = true;
    let d = e.recv(r.clone()).await;
    assert_eq!(bodies(&d), ["a1", "b1", "c1"]);
    assert!(e.recv(r.clone()).await.is_empty());
    // Ack a1: a2 is next for A; B is still blocked by b1.
    e.c.ack(GROUP, TOPIC, &d[0].receipt_handle).unwrap();
    let d2 = e.recv(r.clone()).await;
    assert_eq!(bodies(&d2), ["a2"]);
    // b1 expires: its redelivery comes before b2, and b2 stays held.
    e.clock.advance(10_000);
    let d3 = e.recv(r.clone()).await;
    let mut got = bodies(&d3);
    got.sort();
    assert_eq!(got, ["a2", "b1", "c1"]);
    assert!(d3.iter().all(|d| d.delivery_attempt == 2));
    let by_body: HashMap<String, String> = d3
        .iter()
        .map(|d| {
            (
                String::from_utf8(d.message.body.clone()).unwrap(),
                d.receipt_handle.clone(),
            )
        })
        .collect();
    e.c.ack(GROUP, TOPIC, &by_body["b1"]).unwrap();
    e.c.ack(GROUP, TOPIC, &by_body["a2"]).unwrap();
    e.c.ack(GROUP, TOPIC, &by_body["c1"]).unwrap();
    let d4 = e.recv(r.clone()).await;
    assert_eq!(bodies(&d4), ["b2", "a3"]);
    for x in &d4 {
        e.c.ack(GROUP, TOPIC, &x.receipt_handle).unwrap();
    }
    assert_eq!(e.lag(TOPIC, 0).committed_offset, QueueOffset(6));
}

#[tokio::test]
async fn fifo_order_holds_under_random_acks_and_expiries() {
    let e = env();
    let groups = ["g0", "g1", "g2"];
    for i in 0..30 {
        e.send(
            TOPIC,
            0,
            None,
            Some(groups[i % 3]),
            &format!("{}:{i}", groups[i % 3]),
        );
    }
    e.wait_dispatched(TOPIC, 0, 30).await;
    let mut r = req();
    r.fifo = true;
    r.batch_size = 4;
    let mut acked: HashMap<String, Vec<usize>> = HashMap::new();
    let mut x: u64 = 7;
    for _round in 0..400 {
        let d = e.recv(r.clone()).await;
        let mut seen_groups = HashSet::new();
        for delivery in d {
            let body = String::from_utf8(delivery.message.body.clone()).unwrap();
            let (g, i) = body.split_once(':').unwrap();
            assert!(seen_groups.insert(g.to_owned()), "two of {g} in flight");
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if x >> 62 == 0 {
                continue; // let it expire
            }
            e.c.ack(GROUP, TOPIC, &delivery.receipt_handle).unwrap();
            acked
                .entry(g.to_owned())
                .or_default()
                .push(i.parse().unwrap());
        }
        e.clock.advance(5_000);
        if acked.values().map(Vec::len).sum::<usize>() == 30 {
            break;
        }
    }
    for g in groups {
        let got = &acked[g];
        let want: Vec<usize> = (0..30).filter(|i| groups[i % 3] == g).collect();
        assert_eq!(got, &want, "group {g} out of order");
    }
}
