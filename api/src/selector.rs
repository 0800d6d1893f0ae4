//! Label selectors (`?labelSelector=`) and field selectors (`?fieldSelector=`), parsed as Kubernetes does.

use std::collections::BTreeMap;

use crate::validation;

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key` (the label is present).
    Exists(String),
    /// `!key` (the label is absent).
    NotExists(String),
    /// `key=value`, `key==value`, `key in (a,b)`.
    In(String, Vec<String>),
    /// `key!=value`, `key notin (a,b)`: true also when the label is absent.
    NotIn(String, Vec<String>),
    /// `key>N` (integer comparison).
    Gt(String, i64),
    /// `key<N` (integer comparison).
    Lt(String, i64),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Gt(k, n) => labels
                .get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            Requirement::Lt(k, n) => labels
                .get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        }
    }
}

/// A parsed label selector: all requirements must hold. Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// The requirements, ANDed.
    pub requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Whether the selector has no requirements (selects everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Parses the `labelSelector` query syntax: `a=b,c!=d,e in (x,y),f notin (z),g,!h,i>3`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut lexer = Lexer {
            chars: s.chars().collect(),
            pos: 0,
        };
        let mut requirements = vec![];
        loop {
            lexer.skip_ws();
            if lexer.at_end() {
                if !requirements.is_empty() {
                    return Err(format!(
                        "unable to parse requirement: found trailing ',' in {s:?}"
                    ));
                }
                break;
            }
            requirements.push(lexer.requirement()?);
            lexer.skip_ws();
            if lexer.at_end() {
                break;
            }
            if !lexer.eat(',') {
                return Err(format!(
                    "unable to parse requirement: expected ',' at position {} in {s:?}",
                    lexer.pos
                ));
            }
        }
        for r in &requirements {
            let (key, values): (&str, &[String]) = match r {
                Requirement::Exists(k)
                | Requirement::NotExists(k)
                | Requirement::Gt(k, _)
                | Requirement::Lt(k, _) => (k, &[]),
                Requirement::In(k, v) | Requirement::NotIn(k, v) => (k, v),
            };
            if let Err(e) = validation::qualified_name(key) {
                return Err(format!(
                    "unable to parse requirement: invalid label key {key:?}: {e}"
                ));
            }
            for v in values {
                if let Err(e) = validation::label_value(v) {
                    return Err(format!(
                        "unable to parse requirement: invalid label value: {v:?}: {e}"
                    ));
                }
            }
        }
        Ok(LabelSelector { requirements })
    }

    /// Builds a selector from a map: every key must equal its value (ReplicationController, Service).
    pub fn from_map(map: &BTreeMap<String, String>) -> Self {
        LabelSelector {
            requirements: map
                .iter()
                .map(|(k, v)| Requirement::In(k.clone(), vec![v.clone()]))
                .collect(),
        }
    }

    /// Builds a selector from a `metav1.LabelSelector` (matchLabels + matchExpressions).
    pub fn from_api(
        sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    ) -> Result<Self, String> {
        let mut requirements = vec![];
        for (k, v) in sel.match_labels.iter().flatten() {
            requirements.push(Requirement::In(k.clone(), vec![v.clone()]));
        }
        for e in sel.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            let r = match e.operator.as_str() {
                "In" if !values.is_empty() => Requirement::In(e.key.clone(), values),
                "NotIn" if !values.is_empty() => Requirement::NotIn(e.key.clone(), values),
                "Exists" if values.is_empty() => Requirement::Exists(e.key.clone()),
                "DoesNotExist" if values.is_empty() => Requirement::NotExists(e.key.clone()),
                "In" | "NotIn" => {
                    return Err(format!(
                        "{}: values must be non-empty for operator {}",
                        e.key, e.operator
                    ));
                }
                "Exists" | "DoesNotExist" => {
                    return Err(format!(
                        "{}: values must be empty for operator {}",
                        e.key, e.operator
                    ));
                }
                op => return Err(format!("{op:?} is not a valid label selector operator")),
            };
            requirements.push(r);
        }
        Ok(LabelSelector { requirements })
    }
}

impl std::fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match r {
                Requirement::Exists(k) => k.clone(),
                Requirement::NotExists(k) => format!("!{k}"),
                Requirement::In(k, v) if v.len() == 1 => format!("{k}={}", v[0]),
                Requirement::In(k, v) => format!("{k} in ({})", v.join(",")),
                Requirement::NotIn(k, v) if v.len() == 1 => format!("{k}!={}", v[0]),
                Requirement::NotIn(k, v) => format!("{k} notin ({})", v.join(",")),
                Requirement::Gt(k, n) => format!("{k}>{n}"),
                Requirement::Lt(k, n) => format!("{k}<{n}"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
}

impl Lexer {
    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn eat_str(&mut self, s: &str) -> bool {
        let n = s.chars().count();
        if self.chars.len() >= self.pos + n
            && self.chars[self.pos..self.pos + n]
                .iter()
                .copied()
                .eq(s.chars())
        {
            self.pos += n;
            true
        } else {
            false
        }
    }
    /// A key or value token: anything up to a delimiter.
    fn word(&mut self) -> String {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_whitespace() || matches!(c, ',' | '=' | '!' | '(' | ')' | '<' | '>') {
                break;
            }
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }
    fn requirement(&mut self) -> Result<Requirement, String> {
        if self.eat('!') {
            self.skip_ws();
            let key = self.word();
            if key.is_empty() {
                return Err("unable to parse requirement: expected a key after '!'".into());
            }
            return Ok(Requirement::NotExists(key));
        }
        let key = self.word();
        if key.is_empty() {
            return Err(format!(
                "unable to parse requirement: expected a key at position {}",
                self.pos
            ));
        }
        self.skip_ws();
        if self.at_end() || self.peek() == Some(',') {
            return Ok(Requirement::Exists(key));
        }
        if self.eat_str("==") || self.eat('=') {
            self.skip_ws();
            return Ok(Requirement::In(key, vec![self.word()]));
        }
        if self.eat_str("!=") {
            self.skip_ws();
            return Ok(Requirement::NotIn(key, vec![self.word()]));
        }
        if self.eat('>') || self.eat('<') {
            let gt = self.chars[self.pos - 1] == '>';
            self.skip_ws();
            let v = self.word();
            let n: i64 = v
                .parse()
                .map_err(|_| format!("unable to parse requirement: {v:?} is not an integer"))?;
            return Ok(if gt {
                Requirement::Gt(key, n)
            } else {
                Requirement::Lt(key, n)
            });
        }
        let op = self.word();
        let negate = match op.as_str() {
            "in" => false,
            "notin" => true,
            other => {
                return Err(format!(
                    "unable to parse requirement: unknown operator {other:?} after key {key:?}"
                ));
            }
        };
        self.skip_ws();
        if !self.eat('(') {
            return Err(format!(
                "unable to parse requirement: expected '(' after '{op}'"
            ));
        }
        let mut values = vec![];
        loop {
            self.skip_ws();
            values.push(self.word());
            self.skip_ws();
            if self.eat(')') {
                break;
            }
            if !self.eat(',') {
                return Err("unable to parse requirement: expected ',' or ')' in value set".into());
            }
        }
        Ok(if negate {
            Requirement::NotIn(key, values)
        } else {
            Requirement::In(key, values)
        })
    }
}

/// One field requirement: `field=value` or `field!=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// Dotted field path, e.g. `spec.nodeName`.
    pub field: String,
    /// The value compared against.
    pub value: String,
    /// `!=` rather than `=`.
    pub negated: bool,
}

/// A parsed field selector: all requirements must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// The requirements, ANDed.
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses `a=b,c!=d,e==f` with `\,`, `\=` and `\\` escapes in values.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut requirements = vec![];
        for part in split_unescaped(s, ',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (field, value, negated) = if let Some(i) = find_unescaped(part, "!=") {
                (&part[..i], &part[i + 2..], true)
            } else if let Some(i) = find_unescaped(part, "==") {
                (&part[..i], &part[i + 2..], false)
            } else if let Some(i) = find_unescaped(part, "=") {
                (&part[..i], &part[i + 1..], false)
            } else {
                return Err(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                ));
            };
            requirements.push(FieldRequirement {
                field: field.trim().to_string(),
                value: unescape(value),
                negated,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// Whether the selector has no requirements.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object whose field values are given by `get` satisfies every requirement.
    pub fn matches(&self, get: impl Fn(&str) -> String) -> bool {
        self.requirements
            .iter()
            .all(|r| (get(&r.field) == r.value) != r.negated)
    }

    /// The value an `=` requirement pins `field` to, if any (e.g. `metadata.name=x` narrows a list to one key).
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && !r.negated)
            .map(|r| r.value.as_str())
    }
}

fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut parts = vec![];
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    parts.push(&s[start..]);
    parts
}

fn find_unescaped(s: &str, pat: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if c == '\\' {
            escaped = true;
            continue;
        }
        if s[i..].starts_with(pat) {
            return Some(i);
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_operator() {
        let s =
            LabelSelector::parse("a=b, c==d,e!=f,g in (h, i),j notin (k),l,!m,n>3,o<9").unwrap();
        assert_eq!(s.requirements.len(), 9);
        let l = labels(&[
            ("a", "b"),
            ("c", "d"),
            ("g", "i"),
            ("j", "x"),
            ("l", ""),
            ("n", "4"),
            ("o", "1"),
        ]);
        assert!(s.matches(&l));
        let mut l2 = l.clone();
        l2.insert("m".into(), "1".into());
        assert!(!s.matches(&l2));
        let mut l3 = l.clone();
        l3.insert("e".into(), "f".into());
        assert!(!s.matches(&l3));
        assert!(!s.matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn rejects_bad_syntax() {
        for bad in [
            "a in b",
            "a in (b",
            "=b",
            "a=b,",
            "a==b c",
            "a b",
            "a>x",
            "bad key!=1",
            "a=b$c",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad} should fail");
        }
        assert!(LabelSelector::parse("").unwrap().is_empty());
        assert!(LabelSelector::parse("app.kubernetes.io/name=web").is_ok());
    }

    #[test]
    fn notin_matches_absent_labels() {
        let s = LabelSelector::parse("tier notin (db)").unwrap();
        assert!(s.matches(&labels(&[])));
        assert!(!s.matches(&labels(&[("tier", "db")])));
    }

    #[test]
    fn field_selectors_with_escapes() {
        let s = FieldSelector::parse(r"metadata.name=a\,b,status.phase!=Running,spec.nodeName==n1")
            .unwrap();
        assert_eq!(s.requirements[0].value, "a,b");
        assert!(s.requirements[1].negated);
        assert_eq!(s.exact("spec.nodeName"), Some("n1"));
        let get = |f: &str| match f {
            "metadata.name" => "a,b".to_string(),
            "status.phase" => "Pending".to_string(),
            "spec.nodeName" => "n1".to_string(),
            _ => String::new(),
        };
        assert!(s.matches(get));
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
