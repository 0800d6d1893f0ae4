//! Node labels as integers: an exact [`Interner`] of label strings, so that matching a pod's
//! nodeSelector against a node compares integers instead of walking the node's label map and
//! comparing strings.
//!
//! The [`crate::cache::Cache`] owns one [`NodeLabels`]. Every label key and value of every node it
//! holds is interned (reference counted, so strings no node uses any more are forgotten and their
//! ids reused), and each node's labels are a sorted list of [`LabelId`]s, stored back to back with
//! the other nodes' lists so that a search over consecutive nodes reads consecutive memory. A pod's
//! selector is looked up, not interned, once per decision: a key or value the interner does not
//! know is on no node. Equality of ids is equality of strings (the interner maps strings through a
//! `HashMap` that compares them), never a hash-only match.

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

    /// Gives back one reference to each key and value of `labels`.
    pub fn release_labels(&mut self, labels: &BTreeMap<String, String>) {
        for (k, v) in labels {
            self.release(k);
            self.release(v);
        }
    }
}

/// Where a node's label ids are in a [`NodeLabels`]: `len` ids from `start`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LabelSpan {
    start: u32,
    len: u32,
}

impl LabelSpan {
    /// Number of labels.
    pub fn len(self) -> usize {
        self.len as usize
    }

    /// Whether there are no labels.
    pub fn is_empty(self) -> bool {
        self.len == 0
    }
}

/// The label ids of many nodes: an [`Interner`] and one vector holding each node's sorted ids at
/// a [`LabelSpan`]. Replaced and removed lists leave garbage behind until the owner compacts
/// ([`NodeLabels::needs_compaction`], [`NodeLabels::compact`]).
#[derive(Debug, Default)]
pub struct NodeLabels {
    interner: Interner,
    ids: Vec<LabelId>,
    /// How many entries of `ids` belong to no span.
    garbage: usize,
}

impl NodeLabels {
    /// No labels.
    pub fn new() -> NodeLabels {
        NodeLabels::default()
    }

    /// The interner of the keys and values.
    pub fn interner(&self) -> &Interner {
        &self.interner
    }

    /// Adds a node's labels (interning them) and returns where they are.
    pub fn add(&mut self, labels: &BTreeMap<String, String>) -> LabelSpan {
        let start = self.ids.len();
        for (k, v) in labels {
            let id = label_id(self.interner.acquire(k), self.interner.acquire(v));
            self.ids.push(id);
        }
        self.ids[start..].sort_unstable();
        LabelSpan {
            start: u32::try_from(start).expect("fewer than 2^32 node labels"),
            len: u32::try_from(labels.len()).expect("fewer than 2^32 labels on a node"),
        }
    }

    /// Removes the labels `labels` that [`NodeLabels::add`] put at `span`.
    pub fn remove(&mut self, span: LabelSpan, labels: &BTreeMap<String, String>) {
        self.interner.release_labels(labels);
        self.garbage += span.len();
    }

    /// Replaces the labels `old` at `span` by `new` and returns where those are: `span` itself
    /// when they are equal, nothing interned twice.
    pub fn replace(
        &mut self,
        span: LabelSpan,
        old: &BTreeMap<String, String>,
        new: &BTreeMap<String, String>,
    ) -> LabelSpan {
        if old == new {
            return span;
        }
        // Take the new references before giving back the old ones, so that labels that stay
        // keep their ids.
        let added = self.add(new);
        self.remove(span, old);
        added
    }

    /// The sorted label ids at `span`.
    #[inline]
    pub fn get(&self, span: LabelSpan) -> &[LabelId] {
        let start = span.start as usize;
        &self.ids[start..start + span.len()]
    }

    /// Whether garbage takes more room than the live lists (and enough to be worth a copy).
    pub fn needs_compaction(&self) -> bool {
        self.garbage > 4096 && self.garbage > self.ids.len() / 2
    }

    /// Moves the live lists together, in the order of `spans` (which must be every live span,
    /// each once), and updates the spans.
    pub fn compact<'a>(&mut self, spans: impl IntoIterator<Item = &'a mut LabelSpan>) {
        let mut ids = Vec::with_capacity(self.ids.len() - self.garbage);
        for span in spans {
            let start = u32::try_from(ids.len()).expect("fewer than 2^32 node labels");
            ids.extend_from_slice(self.get(*span));
            span.start = start;
        }
        debug_assert_eq!(ids.len(), self.ids.len() - self.garbage);
        self.ids = ids;
        self.garbage = 0;
    }

    /// Number of stored ids, garbage included.
    pub fn stored(&self) -> usize {
        self.ids.len()
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
        let mut l = NodeLabels::new();
        let n1 = map(&[("zone", "a"), ("disk", "ssd"), ("a", "zone")]);
        let n2 = map(&[("zone", "b"), ("gen", "a")]);
        let s1 = l.add(&n1);
        let s2 = l.add(&n2);
        assert_eq!((s1.len(), s2.len()), (3, 2));
        assert!(l.get(s1).windows(2).all(|w| w[0] < w[1]));
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
            let ids = SelectorIds::new(&s, l.interner(), &mut scratch);
            assert_eq!(ids.matches(l.get(s1)), selector_matches(&s, &n1), "{s:?}");
            assert_eq!(ids.matches(l.get(s2)), selector_matches(&s, &n2), "{s:?}");
        }
        assert_eq!(
            SelectorIds::new(&sel(&[]), l.interner(), &mut scratch),
            SelectorIds::Any
        );
        assert_eq!(
            SelectorIds::new(&sel(&[("zone", "c")]), l.interner(), &mut scratch),
            SelectorIds::Never
        );
        // Releasing one node's labels keeps the other's.
        l.remove(s1, &n1);
        assert_eq!(l.interner().get("disk"), None);
        assert!(l.interner().get("zone").is_some() && l.interner().get("a").is_some());
        let ids = SelectorIds::new(&sel(&[("zone", "b")]), l.interner(), &mut scratch);
        assert!(ids.matches(l.get(s2)));
        // Replacing with equal labels keeps the span; with others, moves it.
        assert_eq!(l.replace(s2, &n2, &n2.clone()), s2);
        let n3 = map(&[("zone", "c")]);
        let s3 = l.replace(s2, &n2, &n3);
        assert_ne!(s3, s2);
        assert_eq!(l.interner().len(), 2);
        let ids = SelectorIds::new(&sel(&[("zone", "c")]), l.interner(), &mut scratch);
        assert!(ids.matches(l.get(s3)));
        l.remove(s3, &n3);
        assert!(l.interner().is_empty());
    }

    #[test]
    fn compaction_keeps_lists() {
        let mut l = NodeLabels::new();
        let maps: Vec<BTreeMap<String, String>> = (0..5000)
            .map(|n| map(&[("host", &format!("h{n}")), ("zone", &format!("z{}", n % 3))]))
            .collect();
        let mut spans: Vec<LabelSpan> = maps.iter().map(|m| l.add(m)).collect();
        let (mut live, mut maps) = (Vec::new(), maps);
        // Drop two nodes in three: lots of garbage.
        for (i, (span, m)) in spans.drain(..).zip(maps.drain(..)).enumerate() {
            if i % 3 != 0 {
                l.remove(span, &m);
            } else {
                live.push((span, m));
            }
        }
        assert!(l.needs_compaction());
        let before: Vec<Vec<LabelId>> = live.iter().map(|(s, _)| l.get(*s).to_vec()).collect();
        l.compact(live.iter_mut().map(|(s, _)| s));
        assert!(!l.needs_compaction());
        assert_eq!(l.stored(), live.len() * 2);
        for ((s, m), ids) in live.iter().zip(&before) {
            assert_eq!(l.get(*s), ids.as_slice());
            let mut scratch = Vec::new();
            let sel: Vec<(String, String)> = m.clone().into_iter().collect();
            assert!(SelectorIds::new(&sel, l.interner(), &mut scratch).matches(l.get(*s)));
        }
    }

    #[test]
    fn many_labels_are_searched() {
        let mut l = NodeLabels::new();
        let pairs: Vec<(String, String)> = (0..100)
            .map(|n| (format!("k{n}"), format!("v{}", n % 7)))
            .collect();
        let labels: BTreeMap<String, String> = pairs.iter().cloned().collect();
        let span = l.add(&labels);
        let ids = l.get(span);
        let mut scratch = Vec::new();
        for (n, (k, v)) in pairs.iter().enumerate() {
            let s = vec![(k.clone(), v.clone())];
            assert!(SelectorIds::new(&s, l.interner(), &mut scratch).matches(ids));
            let wrong = vec![(k.clone(), "v8".to_string())];
            assert!(!SelectorIds::new(&wrong, l.interner(), &mut scratch).matches(ids));
            let other = vec![(k.clone(), format!("v{}", (n + 1) % 7))];
            assert!(!SelectorIds::new(&other, l.interner(), &mut scratch).matches(ids));
        }
    }
}
