//! A set of queue offsets kept as disjoint half-open ranges, for the offsets above a queue's
//! committed offset that are already finished (acked, skipped by the filter, dead-lettered).
//! Runs of finished offsets behind one slow message cost one entry, not one per offset.

use std::collections::BTreeMap;

/// Disjoint, non-adjacent half-open ranges `[start, end)`, keyed by start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetRanges {
    ranges: BTreeMap<u64, u64>,
}

impl OffsetRanges {
    /// Iterates the ranges in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(s, e)| (*s, *e))
    }

    /// The end of the range holding `offset`, if any.
    pub fn end_of_range_containing(&self, offset: u64) -> Option<u64> {
        let (_, end) = self.ranges.range(..=offset).next_back()?;
        (*end > offset).then_some(*end)
    }

    pub fn contains(&self, offset: u64) -> bool {
        self.end_of_range_containing(offset).is_some()
    }

    /// The start of the first range beginning strictly after `offset`.
    pub fn next_start_after(&self, offset: u64) -> Option<u64> {
        self.ranges
            .range(offset.saturating_add(1)..)
            .next()
            .map(|(s, _)| *s)
    }

    /// Adds `[start, end)`, merging with overlapping or adjacent ranges.
    pub fn insert_range(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let mut new_start = start;
        let mut new_end = end;
        // A range starting at or before `start` that reaches it merges in.
        if let Some((s, e)) = self
            .ranges
            .range(..=start)
            .next_back()
            .map(|(s, e)| (*s, *e))
        {
            if e >= start {
                new_start = s;
                new_end = new_end.max(e);
                self.ranges.remove(&s);
            }
        }
        // Ranges starting inside or right after the new one merge in.
        let followers: Vec<(u64, u64)> = self
            .ranges
            .range(new_start..=new_end)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in followers {
            new_end = new_end.max(e);
            self.ranges.remove(&s);
        }
        self.ranges.insert(new_start, new_end);
    }

    pub fn insert(&mut self, offset: u64) {
        self.insert_range(offset, offset.saturating_add(1));
    }

    /// Drops everything below `offset` (the committed offset moved there).
    pub fn remove_below(&mut self, offset: u64) {
        let below: Vec<(u64, u64)> = self.ranges.range(..offset).map(|(s, e)| (*s, *e)).collect();
        for (s, e) in below {
            self.ranges.remove(&s);
            if e > offset {
                self.ranges.insert(offset, e);
            }
        }
    }

    /// If a range starts exactly at `offset`, removes it and returns its end.
    pub fn take_range_at(&mut self, offset: u64) -> Option<u64> {
        self.ranges.remove(&offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(r: &OffsetRanges) -> Vec<(u64, u64)> {
        r.iter().collect()
    }

    #[test]
    fn inserts_merge() {
        let mut r = OffsetRanges::default();
        r.insert(5);
        r.insert(7);
        assert_eq!(ranges(&r), vec![(5, 6), (7, 8)]);
        r.insert(6);
        assert_eq!(ranges(&r), vec![(5, 8)]);
        r.insert_range(1, 3);
        r.insert_range(10, 12);
        r.insert_range(2, 11);
        assert_eq!(ranges(&r), vec![(1, 12)]);
        r.insert(12);
        assert_eq!(ranges(&r), vec![(1, 13)]);
        r.insert_range(3, 4);
        assert_eq!(ranges(&r), vec![(1, 13)]);
    }

    #[test]
    fn lookups() {
        let mut r = OffsetRanges::default();
        r.insert_range(10, 20);
        r.insert_range(30, 31);
        assert!(r.contains(10) && r.contains(19) && r.contains(30));
        assert!(!r.contains(9) && !r.contains(20) && !r.contains(31));
        assert_eq!(r.end_of_range_containing(15), Some(20));
        assert_eq!(r.next_start_after(10), Some(30));
        assert_eq!(r.next_start_after(0), Some(10));
        assert_eq!(r.next_start_after(30), None);
    }

    #[test]
    fn remove_below_splits() {
        let mut r = OffsetRanges::default();
        r.insert_range(0, 5);
        r.insert_range(8, 12);
        r.remove_below(10);
        assert_eq!(ranges(&r), vec![(10, 12)]);
        assert_eq!(r.take_range_at(10), Some(12));
        assert_eq!(r.iter().count(), 0);
    }
}
