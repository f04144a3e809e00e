//! Topic routes and queue selection.
//!
//! Producers write to writable queues of leader brokers (id 0): round robin, skipping brokers
//! already tried for the same message, or by hash of the message group for FIFO messages
//! (SipHash-2-4 with the standard key, as the Java and Node clients, so every client maps a
//! group to the same queue). Simple consumers read readable queues of leaders round robin.

use std::hash::Hasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use siphasher::sip::SipHasher24;

use crate::endpoints::Endpoints;

/// What a queue allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permission {
    None,
    Read,
    Write,
    ReadWrite,
}

impl Permission {
    pub(crate) fn readable(self) -> bool {
        matches!(self, Permission::Read | Permission::ReadWrite)
    }

    pub(crate) fn writable(self) -> bool {
        matches!(self, Permission::Write | Permission::ReadWrite)
    }
}

/// The kind of a message, as topics declare which kinds they accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// No group, no delivery time, not transactional.
    Normal,
    /// Has a message group: delivered in order within the group.
    Fifo,
    /// Has a delivery time.
    Delay,
    /// Sent as part of a transaction.
    Transaction,
}

/// The broker serving a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Broker {
    pub(crate) name: String,
    /// 0 is the leader.
    pub(crate) id: i32,
    pub(crate) endpoints: Endpoints,
}

/// One message queue of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MessageQueue {
    pub(crate) topic: String,
    pub(crate) id: i32,
    pub(crate) permission: Permission,
    pub(crate) broker: Broker,
    /// Empty when the server did not say (then anything is accepted).
    pub(crate) accept: Vec<MessageType>,
}

impl MessageQueue {
    pub(crate) fn accepts(&self, kind: MessageType) -> bool {
        self.accept.is_empty() || self.accept.contains(&kind)
    }
}

/// A topic's queues as the last QueryRoute returned them, with the selection state.
#[derive(Debug)]
pub(crate) struct TopicRoute {
    pub(crate) queues: Vec<Arc<MessageQueue>>,
    writable: Vec<Arc<MessageQueue>>,
    readable: Vec<Arc<MessageQueue>>,
    next_write: AtomicUsize,
    next_read: AtomicUsize,
}

impl TopicRoute {
    pub(crate) fn new(queues: Vec<MessageQueue>) -> TopicRoute {
        let queues: Vec<Arc<MessageQueue>> = queues.into_iter().map(Arc::new).collect();
        let leader = |q: &&Arc<MessageQueue>| q.broker.id == 0;
        let writable = queues
            .iter()
            .filter(leader)
            .filter(|q| q.permission.writable())
            .cloned()
            .collect();
        let readable = queues
            .iter()
            .filter(leader)
            .filter(|q| q.permission.readable())
            .cloned()
            .collect();
        // A random start spreads many short-lived clients over the queues.
        let start = rand::random::<u32>() as usize;
        TopicRoute {
            queues,
            writable,
            readable,
            next_write: AtomicUsize::new(start),
            next_read: AtomicUsize::new(start),
        }
    }

    /// Whether two routes list the same queues (then a refresh changes nothing).
    pub(crate) fn same_queues(&self, other: &TopicRoute) -> bool {
        self.queues.len() == other.queues.len()
            && self.queues.iter().zip(&other.queues).all(|(a, b)| a == b)
    }

    /// Every distinct broker endpoint of the route.
    pub(crate) fn endpoints(&self) -> Vec<Endpoints> {
        let mut out: Vec<Endpoints> = Vec::new();
        for q in &self.queues {
            if !out.contains(&q.broker.endpoints) {
                out.push(q.broker.endpoints.clone());
            }
        }
        out
    }

    pub(crate) fn has_writable(&self) -> bool {
        !self.writable.is_empty()
    }

    /// Up to `count` writable queues for one send and its retries: round robin from a shared
    /// cursor, at most one queue per broker so each retry lands on another broker when there
    /// is one.
    pub(crate) fn send_candidates(&self, count: usize) -> Vec<Arc<MessageQueue>> {
        let n = self.writable.len();
        if n == 0 {
            return Vec::new();
        }
        let start = self.next_write.fetch_add(1, Ordering::Relaxed);
        let mut out: Vec<Arc<MessageQueue>> = Vec::with_capacity(count.min(n));
        for i in 0..n {
            let q = &self.writable[start.wrapping_add(i) % n];
            if out.iter().all(|c| c.broker.name != q.broker.name) {
                out.push(q.clone());
                if out.len() >= count {
                    break;
                }
            }
        }
        out
    }

    /// The queue of a FIFO message group: the same for every client with the same route.
    pub(crate) fn queue_for_group(&self, group: &str) -> Option<Arc<MessageQueue>> {
        let n = self.writable.len();
        if n == 0 {
            return None;
        }
        Some(self.writable[group_index(group, n)].clone())
    }

    /// The next readable queue, round robin.
    pub(crate) fn next_readable(&self) -> Option<Arc<MessageQueue>> {
        let n = self.readable.len();
        if n == 0 {
            return None;
        }
        let i = self.next_read.fetch_add(1, Ordering::Relaxed);
        Some(self.readable[i % n].clone())
    }
}

/// SipHash-2-4 (key 00..0f, as Guava's `Hashing.sipHash24()`) of the group's UTF-8 bytes, read
/// as a signed 64-bit number, reduced to `0..n` with a non-negative modulus.
pub(crate) fn group_index(group: &str, n: usize) -> usize {
    let mut h = SipHasher24::new_with_keys(0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
    h.write(group.as_bytes());
    let signed = h.finish() as i64;
    signed.rem_euclid(n as i64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(broker: &str, id: i32, permission: Permission) -> MessageQueue {
        MessageQueue {
            topic: "t".into(),
            id,
            permission,
            broker: Broker {
                name: broker.into(),
                id: 0,
                endpoints: Endpoints::parse(&format!("{broker}.example:1")).unwrap(),
            },
            accept: vec![MessageType::Normal],
        }
    }

    #[test]
    fn siphash_matches_the_reference_vectors() {
        // Reference output of SipHash-2-4, key 00..0f, empty input (Aumasson and Bernstein).
        let mut h = SipHasher24::new_with_keys(0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
        h.write(&[]);
        assert_eq!(h.finish(), 0x726f_db47_dd0e_0e31);
        // Input 00 01 .. 0e (15 bytes): the 16th reference vector.
        let mut h = SipHasher24::new_with_keys(0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
        h.write(&(0u8..15).collect::<Vec<_>>());
        assert_eq!(h.finish(), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn group_index_is_stable_and_in_range() {
        for n in 1..20 {
            for g in ["a", "order-42", "", "消息组"] {
                let i = group_index(g, n);
                assert!(i < n);
                assert_eq!(i, group_index(g, n));
            }
        }
        // The empty input hashes to 0x726fdb47dd0e0e31 (positive): plain modulus.
        assert_eq!(group_index("", 7), (0x726f_db47_dd0e_0e31u64 % 7) as usize);
    }

    #[test]
    fn negative_hashes_use_a_non_negative_modulus() {
        // Find a group whose hash is negative as a signed number, as Java's long would be.
        let g = (0..1000)
            .map(|i| format!("g{i}"))
            .find(|g| {
                let mut h =
                    SipHasher24::new_with_keys(0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
                h.write(g.as_bytes());
                (h.finish() as i64) < 0
            })
            .unwrap();
        let mut h = SipHasher24::new_with_keys(0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
        h.write(g.as_bytes());
        let signed = h.finish() as i64;
        let expected = ((signed % 5) + 5) % 5;
        assert_eq!(group_index(&g, 5) as i64, expected);
    }

    #[test]
    fn send_candidates_rotate_and_prefer_distinct_brokers() {
        let route = TopicRoute::new(vec![
            queue("a", 0, Permission::ReadWrite),
            queue("a", 1, Permission::ReadWrite),
            queue("b", 0, Permission::ReadWrite),
            queue("c", 0, Permission::Read),
        ]);
        assert!(route.has_writable());
        let c = route.send_candidates(3);
        assert_eq!(c.len(), 2, "one queue per broker, only writable ones");
        assert_ne!(c[0].broker.name, c[1].broker.name);
        // Round robin: consecutive sends start at consecutive queues.
        let firsts: Vec<i32> = (0..3)
            .map(|_| {
                let q = &route.send_candidates(1)[0];
                q.id * 10 + i32::from(q.broker.name == "b")
            })
            .collect();
        let mut sorted = firsts.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            3,
            "three sends cover three queues: {firsts:?}"
        );
    }

    #[test]
    fn readable_queues_and_groups() {
        let route = TopicRoute::new(vec![
            queue("a", 0, Permission::Write),
            queue("a", 1, Permission::Read),
        ]);
        assert_eq!(route.next_readable().unwrap().id, 1);
        assert_eq!(route.next_readable().unwrap().id, 1);
        assert_eq!(route.queue_for_group("g").unwrap().id, 0);
        assert_eq!(route.endpoints().len(), 1);
        let empty = TopicRoute::new(vec![]);
        assert!(empty.queue_for_group("g").is_none());
        assert!(empty.send_candidates(3).is_empty());
        assert!(empty.next_readable().is_none());
    }
}
