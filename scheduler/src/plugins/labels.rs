//! Node labels as integers: an exact [`Interner`] of label strings, so that matching a pod's
//! nodeSelector against a node compares integers instead of walking the node's label map and
//! comparing strings.
//!
//! The [`crate::cache::Cache`] owns one interner. Every label key and value of every node it holds
//! is interned (reference counted, so strings no node uses any more are forgotten and their ids
//! reused), and each node keeps its labels as a sorted list of [`LabelId`]s. A pod's selector is
//! looked up, not interned, once per decision: a key or value the interner does not know is on no
//! node. Equality of ids is equality of strings (the interner maps strings through a `HashMap`
//! that compares them), never a hash-only match.

use std::collections::{BTreeMap, HashMap};

/// A node label `key=value`: the key's id in the high 32 bits, the value's in the low 32 bits.
/// Two labels have the same id exactly when their keys and their values are equal (while the
/// interner that gave the ids holds them).
pub type LabelId = u64;

/// Above this many labels a node's sorted label list is binary searched rather than scanned.
const LINEAR_SEARCH_MAX: usize = 32;

/// Exact, reference-counted interning of strings to dense `u32` ids.
#[derive(Debug, Default)]
pub struct Interner {
    /// String → id.
    ids: HashMap<Box<str>, u32>,
    /// References per id; 0 for a free id.
    refs: Vec<u32>,
    /// Ids whose string was released by every holder, for reuse.
    free: Vec<u32>,
}

impl Interner {
    /// An empty interner.
    pub fn new() -> Interner {
        Interner::default()
    }

    /// The id of `s`, if something holds it.
    #[inline]
    pub fn get(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }

    /// The id of `s`, interning it if needed; takes one reference (give it back with
    /// [`Interner::release`]).
    pub fn acquire(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            self.refs[id as usize] += 1;
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.refs.push(0);
                u32::try_from(self.refs.len() - 1).expect("fewer than 2^32 distinct label strings")
            }
        };
        self.refs[id as usize] = 1;
        self.ids.insert(s.into(), id);
        id
    }

    /// Gives back one reference to `s` taken by [`Interner::acquire`]; the string is forgotten
    /// (and its id reused later) when the last one is given back.
    pub fn release(&mut self, s: &str) {
        let Some(&id) = self.ids.get(s) else {
            debug_assert!(false, "released {s:?}, which is not interned");
            return;
        };
        let refs = &mut self.refs[id as usize];
        *refs -= 1;
        if *refs == 0 {
            self.ids.remove(s);
            self.free.push(id);
        }
    }

    /// How many references to `s` are held (0 when it is not interned).
    pub fn refs(&self, s: &str) -> u32 {
        self.get(s).map_or(0, |id| self.refs[id as usize])
    }

    /// Number of distinct strings held.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no string is held.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The id of the label `key=value`, if both strings are held.
    #[inline]
    pub fn label(&self, key: &str, value: &str) -> Option<LabelId> {
        Some(label_id(self.get(key)?, self.get(value)?))
    }

    /// Interns every key and value of `labels` (one reference each) and returns their ids,
    /// sorted. Give them back with [`Interner::release_labels`] on the same map.
    pub fn acquire_labels(&mut self, labels: &BTreeMap<String, String>) -> Box<[LabelId]> {
        let mut ids: Vec<LabelId> = labels
            .iter()
            .map(|(k, v)| label_id(self.acquire(k), self.acquire(v)))
            .collect();
        ids.sort_unstable();
        ids.into_boxed_slice()
    }

    /// Gives back the references [`Interner::acquire_labels`] took for `labels`.
    pub fn release_labels(&mut self, labels: &BTreeMap<String, String>) {
        for (k, v) in labels {
            self.release(k);
            self.release(v);
        }
    }
}

/// The [`LabelId`] of a key id and a value id.
#[inline]
fn label_id(key: u32, value: u32) -> LabelId {
    (u64::from(key) << 32) | u64::from(value)
}

/// Whether the sorted `labels` contain `label`.
#[inline]
pub fn has_label(labels: &[LabelId], label: LabelId) -> bool {
    if labels.len() <= LINEAR_SEARCH_MAX {
        labels.contains(&label)
    } else {
        labels.binary_search(&label).is_ok()
    }
}

/// A pod's equality node selector (spec.nodeSelector) in ids, looked up once per decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SelectorIds<'a> {
    /// The selector is empty: every node matches.
    Any,
    /// A key or value of the selector is on no node: no node matches.
    Never,
    /// A node matches when it has every one of these labels.
    All(&'a [LabelId]),
}

impl<'a> SelectorIds<'a> {
    /// Looks `selector` up in `interner`, using `scratch` (cleared first) for the ids.
    pub fn new(
        selector: &[(String, String)],
        interner: &Interner,
        scratch: &'a mut Vec<LabelId>,
    ) -> SelectorIds<'a> {
        if selector.is_empty() {
            return SelectorIds::Any;
        }
        scratch.clear();
        for (k, v) in selector {
            match interner.label(k, v) {
                Some(id) => scratch.push(id),
                None => return SelectorIds::Never,
            }
        }
        SelectorIds::All(scratch)
    }

    /// Whether a node with the sorted `labels` matches.
    #[inline]
    pub fn matches(&self, labels: &[LabelId]) -> bool {
        match self {
            SelectorIds::Any => true,
            SelectorIds::Never => false,
            SelectorIds::All(ids) => ids.iter().all(|&id| has_label(labels, id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::selector_matches;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn interns_exactly_and_reuses_ids() {
        let mut i = Interner::new();
        let a = i.acquire("a");
        let b = i.acquire("b");
        assert_ne!(a, b);
        assert_eq!(i.acquire("a"), a);
        assert_eq!(i.get("a"), Some(a));
        assert_eq!(i.get("c"), None);
        i.release("a");
        assert_eq!(i.get("a"), Some(a), "one reference left");
        i.release("a");
        assert_eq!(i.get("a"), None);
        assert_eq!(i.len(), 1);
        // The freed id goes to the next new string; "a" is not confused with it.
        let c = i.acquire("c");
        assert_eq!(c, a);
        assert_eq!(i.get("a"), None);
        i.release("b");
        i.release("c");
        assert!(i.is_empty());
    }

    #[test]
    fn selectors_match_like_strings() {
        let mut i = Interner::new();
        let n1 = map(&[("zone", "a"), ("disk", "ssd"), ("a", "zone")]);
        let n2 = map(&[("zone", "b"), ("gen", "a")]);
        let ids1 = i.acquire_labels(&n1);
        let ids2 = i.acquire_labels(&n2);
        assert!(ids1.windows(2).all(|w| w[0] < w[1]));
        let mut scratch = Vec::new();
        for s in [
            sel(&[]),
            sel(&[("zone", "a")]),
            sel(&[("zone", "b")]),
            sel(&[("zone", "a"), ("disk", "ssd")]),
            sel(&[("zone", "a"), ("disk", "hdd")]),
            // Known strings in the wrong places.
            sel(&[("a", "zone")]),
            sel(&[("zone", "zone")]),
            sel(&[("gen", "a")]),
            sel(&[("a", "gen")]),
            sel(&[("nope", "a")]),
        ] {
            let ids = SelectorIds::new(&s, &i, &mut scratch);
            assert_eq!(ids.matches(&ids1), selector_matches(&s, &n1), "{s:?}");
            assert_eq!(ids.matches(&ids2), selector_matches(&s, &n2), "{s:?}");
        }
        assert_eq!(SelectorIds::new(&sel(&[]), &i, &mut scratch), SelectorIds::Any);
        assert_eq!(
            SelectorIds::new(&sel(&[("zone", "c")]), &i, &mut scratch),
            SelectorIds::Never
        );
        // Releasing one node's labels keeps the other's.
        i.release_labels(&n1);
        assert_eq!(i.get("disk"), None);
        assert!(i.get("zone").is_some() && i.get("a").is_some());
        let ids = SelectorIds::new(&sel(&[("zone", "b")]), &i, &mut scratch);
        assert!(ids.matches(&ids2));
        i.release_labels(&n2);
        assert!(i.is_empty());
    }

    #[test]
    fn many_labels_are_searched() {
        let mut i = Interner::new();
        let pairs: Vec<(String, String)> = (0..100)
            .map(|n| (format!("k{n}"), format!("v{}", n % 7)))
            .collect();
        let labels: BTreeMap<String, String> = pairs.iter().cloned().collect();
        let ids = i.acquire_labels(&labels);
        let mut scratch = Vec::new();
        for (k, v) in &pairs {
            let s = vec![(k.clone(), v.clone())];
            assert!(SelectorIds::new(&s, &i, &mut scratch).matches(&ids));
            let wrong = vec![(k.clone(), "v8".to_string())];
            assert!(!SelectorIds::new(&wrong, &i, &mut scratch).matches(&ids));
            let other = vec![(k.clone(), format!("v{}", (k[1..].parse::<usize>().unwrap() + 1) % 7))];
            assert!(!SelectorIds::new(&other, &i, &mut scratch).matches(&ids));
        }
    }
}
