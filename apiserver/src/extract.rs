//! Reads a few values out of a JSON document without building the whole tree: keys that lead to no
//! wanted path are skipped, so the cost is a scan of the bytes rather than an allocation per node.
//! The read paths use it to learn an object's name, labels and selectable fields.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

/// A set of dotted paths to read, as a trie.
#[derive(Debug, Default)]
pub struct Paths {
    children: Vec<(String, Paths)>,
    slot: Option<usize>,
    count: usize,
}

impl Paths {
    /// Builds the trie; the value of `paths[i]` is returned at index `i`.
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a str>) -> Paths {
        let mut root = Paths::default();
        for (i, p) in paths.into_iter().enumerate() {
            let mut node = &mut root;
            for part in p.split('.') {
                let pos = match node.children.iter().position(|(k, _)| k == part) {
                    Some(pos) => pos,
                    None => {
                        node.children.push((part.to_string(), Paths::default()));
                        node.children.len() - 1
                    }
                };
                node = &mut node.children[pos].1;
            }
            node.slot = Some(i);
            root.count = i + 1;
        }
        root
    }

    /// The values at each path (None where absent), or the JSON error.
    pub fn read(&self, json: &[u8]) -> Result<Vec<Option<Value>>, serde_json::Error> {
        let mut out = vec![None; self.count];
        let mut de = serde_json::Deserializer::from_slice(json);
        Walk {
            node: self,
            out: &mut out,
        }
        .deserialize(&mut de)?;
        de.end()?;
        Ok(out)
    }
}

struct Walk<'a> {
    node: &'a Paths,
    out: &'a mut Vec<Option<Value>>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

macro_rules! ignore_scalars {
    ($($f:ident: $t:ty),*) => {
        $(fn $f<E>(self, _: $t) -> Result<(), E> { Ok(()) })*
    };
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }
    ignore_scalars!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key::<Key>()? {
            match self.node.children.iter().find(|(k, _)| *k == key) {
                Some((_, child)) => match child.slot {
                    Some(i) => self.out[i] = Some(map.next_value::<Value>()?),
                    None => map.next_value_seed(Walk {
                        node: child,
                        out: self.out,
                    })?,
                },
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// The paths of keys that appear twice in one JSON object anywhere in `json`
/// (`metadata.name`, `spec.containers[0].image`), in the order they are found.
pub fn duplicate_fields(json: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    let mut out = vec![];
    let mut path = String::new();
    let mut de = serde_json::Deserializer::from_slice(json);
    Dups {
        path: &mut path,
        out: &mut out,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(out)
}

/// Walks every object of a document; `path` is the current path, extended and cut back in place so
/// that only duplicates cost an allocation.
struct Dups<'a> {
    path: &'a mut String,
    out: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for Dups<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Dups<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }
    ignore_scalars!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let base = self.path.len();
        let mut i = 0;
        loop {
            use std::fmt::Write as _;
            let _ = write!(self.path, "[{i}]");
            let more = seq
                .next_element_seed(Dups {
                    path: self.path,
                    out: self.out,
                })?
                .is_some();
            self.path.truncate(base);
            if !more {
                return Ok(());
            }
            i += 1;
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let base = self.path.len();
        let mut seen: Vec<Cow<'de, str>> = vec![];
        while let Some(Key(key)) = map.next_key::<Key>()? {
            if base > 0 {
                self.path.push('.');
            }
            self.path.push_str(&key);
            if seen.contains(&key) {
                self.out.push(self.path.clone());
            } else {
                seen.push(key);
            }
            map.next_value_seed(Dups {
                path: self.path,
                out: self.out,
            })?;
            self.path.truncate(base);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_only_the_wanted_paths() {
        let doc = json!({"metadata": {"name": "a", "labels": {"x": "1"}, "skip": [1, {"name": "no"}]},
                         "spec": {"nodeName": "n1", "unschedulable": true, "name": "no"}, "status": null});
        let bytes = serde_json::to_vec(&doc).unwrap();
        let p = Paths::new([
            "metadata.name",
            "metadata.labels",
            "spec.nodeName",
            "spec.unschedulable",
            "status.phase",
            "x.y",
        ]);
        let v = p.read(&bytes).unwrap();
        assert_eq!(v[0], Some(json!("a")));
        assert_eq!(v[1], Some(json!({"x": "1"})));
        assert_eq!(v[2], Some(json!("n1")));
        assert_eq!(v[3], Some(json!(true)));
        assert_eq!(v[4], None);
        assert_eq!(v[5], None);
        assert!(p.read(b"{\"metadata\": ").is_err());
        assert!(p.read(b"{} trailing").is_err());
        assert_eq!(p.read(b"[1,2]").unwrap(), vec![None; 6]);
    }

    #[test]
    fn finds_duplicate_keys_at_any_depth() {
        let doc = br#"{"metadata":{"name":"a","name":"b"},"spec":{"containers":[{"image":"x","image":"y"}]},"kind":"Pod"}"#;
        assert_eq!(
            duplicate_fields(doc).unwrap(),
            ["metadata.name", "spec.containers[0].image"]
        );
        assert!(
            duplicate_fields(br#"{"a":{"b":1},"c":{"b":2}}"#)
                .unwrap()
                .is_empty()
        );
        assert!(duplicate_fields(b"{").is_err());
    }
}
