//! Which queue of a topic a message goes to when the broker picks (the client's
//! `queue_id` is not a choice the protocol lets it make: the Apache proxy ignores it too).
//!
//! A message group maps to a queue by the Apache proxy's own rule, so a group keeps its queue
//! when an application moves between the two brokers: Java's `String.hashCode` of the group
//! name, then Guava's `Hashing.consistentHash` over the topic's write-queue count. Consistent
//! hashing also keeps most groups on their queue when queues are added. Messages without a
//! group are spread round robin by the caller.

/// Java's `String.hashCode`: `s[0]·31^(n-1) + … + s[n-1]` over the UTF-16 code units,
/// wrapping at 32 bits.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// Guava's `Hashing.consistentHash(input, buckets)`: a bucket in `[0, buckets)` that changes
/// for only about `1/buckets` of the inputs when one bucket is added. `buckets == 0` gives 0.
pub fn consistent_hash(input: i64, buckets: u32) -> u32 {
    if buckets <= 1 {
        return 0;
    }
    // Guava's linear congruential generator, seeded with the input.
    let mut state = input as u64;
    let mut next_double = || {
        state = state
            .wrapping_mul(2_862_933_555_777_941_757)
            .wrapping_add(1);
        f64::from(((state >> 33) as i32).wrapping_add(1)) / 2f64.powi(31)
    };
    let mut candidate: i64 = 0;
    loop {
        // Java's (int) cast of a double: saturating, as Rust's `as` is.
        let next = ((candidate + 1) as f64 / next_double()) as i32;
        if next >= 0 && i64::from(next) < i64::from(buckets) {
            candidate = i64::from(next);
        } else {
            return candidate as u32;
        }
    }
}

/// The queue of `message_group` among `queue_count` write queues, as the Apache proxy picks it.
pub fn queue_for_group(message_group: &str, queue_count: u32) -> u32 {
    consistent_hash(i64::from(java_string_hash(message_group)), queue_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Produced by Java 17 with Guava 33.8.0 (`String.hashCode`, `Hashing.consistentHash`)
    /// for buckets 1, 2, 3, 8, 16 and 1024.
    const VECTORS: &[(&str, i32, [u32; 6])] = &[
        ("", 0, [0, 0, 0, 0, 0, 0]),
        ("a", 97, [0, 0, 0, 0, 0, 346]),
        ("order-1", -1_207_111_310, [0, 0, 0, 3, 3, 489]),
        ("order-42", 1_234_255_197, [0, 0, 2, 3, 10, 753]),
        ("user:7", -836_031_416, [0, 0, 0, 5, 5, 631]),
        ("中文组", 20_070_666, [0, 0, 0, 7, 7, 52]),
        (
            "group-with-a-much-longer-name-0123456789",
            -1_103_828_354,
            [0, 1, 1, 1, 1, 496],
        ),
        ("😀", 1_772_899, [0, 1, 1, 4, 4, 748]),
    ];
    const BUCKETS: [u32; 6] = [1, 2, 3, 8, 16, 1024];

    #[test]
    fn matches_java_and_guava() {
        for (key, java_hash, expected) in VECTORS {
            assert_eq!(java_string_hash(key), *java_hash, "hashCode of {key:?}");
            for (buckets, want) in BUCKETS.iter().zip(expected) {
                assert_eq!(
                    queue_for_group(key, *buckets),
                    *want,
                    "{key:?} over {buckets} queues"
                );
            }
        }
    }

    #[test]
    fn stays_in_range_and_moves_few_groups_when_a_queue_is_added() {
        let groups: Vec<String> = (0..10_000).map(|i| format!("g-{i}")).collect();
        let mut moved = 0;
        for g in &groups {
            let eight = queue_for_group(g, 8);
            let nine = queue_for_group(g, 9);
            assert!(eight < 8 && nine < 9);
            if eight != nine {
                assert_eq!(nine, 8, "a group only ever moves to the new queue");
                moved += 1;
            }
        }
        // About a ninth of the groups move to the new queue.
        assert!((800..1500).contains(&moved), "{moved} of 10000 moved");
        assert_eq!(queue_for_group("x", 0), 0);
    }
}
