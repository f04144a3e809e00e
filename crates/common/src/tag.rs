//! The tag hash stored in every consume-queue entry, used to skip non-matching messages
//! without reading the commit log. A hash match is only a hint: filters confirm against the
//! real tag, so collisions never deliver a wrong message.

/// Hash of "no tag". Real tags never hash to it (see [`tag_hash`]).
pub const NO_TAG_HASH: u64 = 0;

/// 64-bit FNV-1a of the tag's UTF-8 bytes; never returns [`NO_TAG_HASH`] for a non-empty tag.
pub fn tag_hash(tag: &str) -> u64 {
    if tag.is_empty() {
        return NO_TAG_HASH;
    }
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for b in tag.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    if h == NO_TAG_HASH {
        1
    } else {
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_tag_is_no_tag() {
        assert_eq!(tag_hash(""), NO_TAG_HASH);
    }

    #[test]
    fn distinct_tags_hash_differently() {
        assert_ne!(tag_hash("TagA"), tag_hash("TagB"));
        assert_eq!(tag_hash("TagA"), tag_hash("TagA"));
        assert_ne!(tag_hash("a"), NO_TAG_HASH);
    }
}
