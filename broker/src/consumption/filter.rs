//! Tag filter expressions (`FilterType::TAG`): `*` or empty matches everything, `a||b||c`
//! matches any of the listed tags.
//!
//! Matching runs in two steps: the consume-queue tag hash lets the store skip entries without
//! reading the commit log ([`FilterExpression::matches_hash`]), then the real tag confirms
//! ([`FilterExpression::matches_tag`]), so a hash collision never delivers a wrong message.

use std::collections::HashSet;

use rocketlog_common::tag::{tag_hash, NO_TAG_HASH};

use super::error::ConsumeError;

/// Separator between alternatives in a tag expression.
const TAG_SEPARATOR: &str = "||";

/// A parsed tag filter expression.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FilterExpression {
    /// Every message matches (`*` or an empty expression).
    #[default]
    All,
    /// A message matches when its tag is one of these (never empty).
    Tags(Tags),
}

/// The tags of a [`FilterExpression::Tags`] filter with their hashes, kept together so that the
/// hash pre-check and the exact check always agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tags {
    tags: HashSet<String>,
    hashes: HashSet<u64>,
}

impl Tags {
    /// The accepted tags.
    pub fn tags(&self) -> &HashSet<String> {
        &self.tags
    }
}

impl FilterExpression {
    /// Parses a tag expression. `*` (alone, spaces around allowed) or an empty/blank expression
    /// matches everything; otherwise the expression is `tag (|| tag)*` with spaces trimmed
    /// around each tag. An empty alternative (`a||`, `||b`, `a|| ||b`) or a `*` mixed with tags
    /// is refused.
    pub fn parse(expression: &str) -> Result<Self, ConsumeError> {
        let trimmed = expression.trim();
        if trimmed.is_empty() || trimmed == "*" {
            return Ok(FilterExpression::All);
        }
        let illegal = |reason: &str| ConsumeError::IllegalFilterExpression {
            expression: expression.to_owned(),
            reason: reason.to_owned(),
        };
        let mut tags = HashSet::new();
        for part in trimmed.split(TAG_SEPARATOR) {
            let tag = part.trim();
            if tag.is_empty() {
                return Err(illegal("empty tag between '||' separators"));
            }
            if tag == "*" {
                return Err(illegal("'*' cannot be combined with other tags"));
            }
            if tag.contains('|') {
                return Err(illegal("a single '|' is not a separator; use '||'"));
            }
            tags.insert(tag.to_owned());
        }
        let hashes = tags.iter().map(|t| tag_hash(t)).collect();
        Ok(FilterExpression::Tags(Tags { tags, hashes }))
    }

    /// Whether a consume-queue entry with this tag hash may match (a hint: confirm with
    /// [`matches_tag`](Self::matches_tag)).
    pub fn matches_hash(&self, hash: u64) -> bool {
        match self {
            FilterExpression::All => true,
            FilterExpression::Tags(t) => hash != NO_TAG_HASH && t.hashes.contains(&hash),
        }
    }

    /// Whether a message with this tag matches (exact).
    pub fn matches_tag(&self, tag: Option<&str>) -> bool {
        match self {
            FilterExpression::All => true,
            FilterExpression::Tags(t) => tag.is_some_and(|tag| t.tags.contains(tag)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_and_empty_match_everything() {
        for e in ["*", "", "   ", " * "] {
            let f = FilterExpression::parse(e).unwrap();
            assert_eq!(f, FilterExpression::All, "{e:?}");
            assert!(f.matches_tag(None));
            assert!(f.matches_tag(Some("x")));
            assert!(f.matches_hash(NO_TAG_HASH));
        }
    }

    #[test]
    fn alternatives_are_trimmed() {
        let f = FilterExpression::parse(" TagA || TagB||TagC ").unwrap();
        assert!(f.matches_tag(Some("TagA")));
        assert!(f.matches_tag(Some("TagB")));
        assert!(f.matches_tag(Some("TagC")));
        assert!(!f.matches_tag(Some("TagD")));
        assert!(!f.matches_tag(Some(" TagA")));
        assert!(!f.matches_tag(None));
        assert!(f.matches_hash(tag_hash("TagB")));
        assert!(!f.matches_hash(tag_hash("TagD")));
        assert!(!f.matches_hash(NO_TAG_HASH));
    }

    #[test]
    fn single_tag() {
        let f = FilterExpression::parse("only").unwrap();
        assert!(f.matches_tag(Some("only")));
        assert!(!f.matches_tag(Some("onl")));
    }

    #[test]
    fn invalid_expressions_are_refused() {
        for e in ["a||", "||a", "a|| ||b", "a||*", "a|b", "||"] {
            match FilterExpression::parse(e) {
                Err(ConsumeError::IllegalFilterExpression { expression, .. }) => {
                    assert_eq!(expression, e)
                }
                other => panic!("{e:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn hash_collision_is_caught_by_exact_check() {
        // A filter accepts a hash but the real tag differs: the exact check must refuse it.
        let f = FilterExpression::parse("a").unwrap();
        assert!(f.matches_hash(tag_hash("a")));
        assert!(!f.matches_tag(Some("b")));
    }
}
