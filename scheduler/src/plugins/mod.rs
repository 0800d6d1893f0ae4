//! Filter and score plugins, and the parsed forms of what they compare (taints, tolerations,
//! node selector terms), built once per pod ([`crate::pod_info::PodInfo`]) or node
//! ([`crate::node_info::NodeInfo`]) so that checking a node is a few comparisons.
//!
//! [`filters`] decides whether a pod may go to a node, in Kubernetes' plugin order; [`scores`]
//! ranks the nodes that passed; [`labels`] turns node labels into integers for the selector
//! check.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as api;

pub mod filters;
pub mod labels;
pub mod scores;
#[cfg(test)]
pub(crate) mod testutil;

/// What a taint does to pods that do not tolerate it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaintEffect {
    /// New pods are not scheduled onto the node.
    NoSchedule,
    /// The scheduler avoids the node when it can.
    PreferNoSchedule,
    /// New pods are not scheduled and running ones are evicted.
    NoExecute,
    /// Any other value (rejected by API validation; kept verbatim so it only matches itself).
    Other(String),
}

impl TaintEffect {
    /// Parses an effect string as found in the API.
    pub fn parse(s: &str) -> TaintEffect {
        match s {
            "NoSchedule" => TaintEffect::NoSchedule,
            "PreferNoSchedule" => TaintEffect::PreferNoSchedule,
            "NoExecute" => TaintEffect::NoExecute,
            other => TaintEffect::Other(other.to_string()),
        }
    }
}

/// A node taint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taint {
    /// The taint key.
    pub key: String,
    /// The taint value ("" when absent).
    pub value: String,
    /// The taint effect.
    pub effect: TaintEffect,
}

impl Taint {
    /// Converts an API taint.
    pub fn from_api(t: &api::Taint) -> Taint {
        Taint {
            key: t.key.clone(),
            value: t.value.clone().unwrap_or_default(),
            effect: TaintEffect::parse(&t.effect),
        }
    }
}

/// How a toleration compares its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TolerationOperator {
    /// The taint value must equal the toleration value (also the meaning of an empty operator).
    Equal,
    /// Any value.
    Exists,
    /// An operator Kubernetes does not know: tolerates nothing.
    Unknown,
}

/// A pod toleration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toleration {
    /// The taint key it applies to; "" means every key.
    pub key: String,
    /// How the value is compared.
    pub operator: TolerationOperator,
    /// The value for [`TolerationOperator::Equal`].
    pub value: String,
    /// The effect it applies to; None means every effect.
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    /// Converts an API toleration.
    pub fn from_api(t: &api::Toleration) -> Toleration {
        Toleration {
            key: t.key.clone().unwrap_or_default(),
            operator: match t.operator.as_deref() {
                None | Some("") | Some("Equal") => TolerationOperator::Equal,
                Some("Exists") => TolerationOperator::Exists,
                Some(_) => TolerationOperator::Unknown,
            },
            value: t.value.clone().unwrap_or_default(),
            effect: t
                .effect
                .as_deref()
                .filter(|e| !e.is_empty())
                .map(TaintEffect::parse),
        }
    }

    /// Whether this toleration tolerates `taint`, exactly as Kubernetes' `ToleratesTaint`.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if let Some(effect) = &self.effect
            && *effect != taint.effect
        {
            return false;
        }
        if !self.key.is_empty() && self.key != taint.key {
            return false;
        }
        match self.operator {
            TolerationOperator::Equal => self.value == taint.value,
            TolerationOperator::Exists => true,
            TolerationOperator::Unknown => false,
        }
    }
}

/// Whether any of `tolerations` tolerates `taint`.
pub fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| t.tolerates(taint))
}

/// A label requirement of a node selector term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelOp {
    /// The label is present with one of these values.
    In(Vec<String>),
    /// The label is absent or has none of these values.
    NotIn(Vec<String>),
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
    /// The label is present, an integer, and greater than this.
    Gt(i64),
    /// The label is present, an integer, and less than this.
    Lt(i64),
}

/// One `matchExpressions` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelRequirement {
    /// The label key.
    pub key: String,
    /// The operator with its values.
    pub op: LabelOp,
}

impl LabelRequirement {
    /// Parses an API requirement; None when Kubernetes would reject it (wrong number of values,
    /// a non-integer for Gt/Lt, an unknown operator).
    pub fn parse(r: &api::NodeSelectorRequirement) -> Option<LabelRequirement> {
        let values = r.values.clone().unwrap_or_default();
        let op = match r.operator.as_str() {
            "In" if !values.is_empty() => LabelOp::In(values),
            "NotIn" if !values.is_empty() => LabelOp::NotIn(values),
            "Exists" if values.is_empty() => LabelOp::Exists,
            "DoesNotExist" if values.is_empty() => LabelOp::DoesNotExist,
            "Gt" if values.len() == 1 => LabelOp::Gt(values[0].parse().ok()?),
            "Lt" if values.len() == 1 => LabelOp::Lt(values[0].parse().ok()?),
            _ => return None,
        };
        Some(LabelRequirement {
            key: r.key.clone(),
            op,
        })
    }

    /// Whether `labels` satisfy the requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match &self.op {
            LabelOp::In(vs) => value.is_some_and(|v| vs.contains(v)),
            LabelOp::NotIn(vs) => value.is_none_or(|v| !vs.contains(v)),
            LabelOp::Exists => value.is_some(),
            LabelOp::DoesNotExist => value.is_none(),
            LabelOp::Gt(n) => value
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            LabelOp::Lt(n) => value
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        }
    }
}

/// One `matchFields` entry: the only node field is `metadata.name`, with In or NotIn and exactly
/// one value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    /// Whether the key is `metadata.name` (any other field reads as "").
    pub is_name: bool,
    /// The value compared with.
    pub value: String,
    /// NotIn rather than In.
    pub negate: bool,
}

impl FieldRequirement {
    /// Parses an API field requirement; None when Kubernetes would reject it.
    pub fn parse(r: &api::NodeSelectorRequirement) -> Option<FieldRequirement> {
        let values = r.values.as_deref().unwrap_or_default();
        if values.len() != 1 {
            return None;
        }
        let negate = match r.operator.as_str() {
            "In" => false,
            "NotIn" => true,
            _ => return None,
        };
        Some(FieldRequirement {
            is_name: r.key == "metadata.name",
            value: values[0].clone(),
            negate,
        })
    }

    /// Whether a node called `name` satisfies the requirement.
    pub fn matches(&self, name: &str) -> bool {
        let actual = if self.is_name { name } else { "" };
        (actual == self.value) != self.negate
    }
}

/// A node selector term: all its requirements must hold (ANDed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSelectorTerm {
    /// `matchExpressions`.
    pub labels: Vec<LabelRequirement>,
    /// `matchFields`.
    pub fields: Vec<FieldRequirement>,
}

impl NodeSelectorTerm {
    /// Parses an API term. None for a term that can never match: an empty one (Kubernetes: "a
    /// null or empty term matches no objects") or one with an invalid requirement.
    pub fn parse(t: &api::NodeSelectorTerm) -> Option<NodeSelectorTerm> {
        let labels = t
            .match_expressions
            .iter()
            .flatten()
            .map(LabelRequirement::parse)
            .collect::<Option<Vec<_>>>()?;
        let fields = t
            .match_fields
            .iter()
            .flatten()
            .map(FieldRequirement::parse)
            .collect::<Option<Vec<_>>>()?;
        if labels.is_empty() && fields.is_empty() {
            return None;
        }
        Some(NodeSelectorTerm { labels, fields })
    }

    /// Whether a node with `labels` and `name` matches the term.
    pub fn matches(&self, labels: &BTreeMap<String, String>, name: &str) -> bool {
        self.labels.iter().all(|r| r.matches(labels)) && self.fields.iter().all(|f| f.matches(name))
    }
}

/// Whether `labels` contain every `(key, value)` of `selector` (an equality selector such as a
/// nodeSelector or a Service selector).
pub fn selector_matches(selector: &[(String, String)], labels: &BTreeMap<String, String>) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.get(k).is_some_and(|l| l == v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.into(),
            effect: TaintEffect::parse(effect),
        }
    }

    fn tol(v: serde_json::Value) -> Toleration {
        Toleration::from_api(&serde_json::from_value(v).unwrap())
    }

    #[test]
    fn toleration_matching() {
        let t = taint("k", "v", "NoSchedule");
        assert!(
            tol(json!({"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"}))
                .tolerates(&t)
        );
        assert!(tol(json!({"key": "k", "value": "v"})).tolerates(&t));
        assert!(!tol(json!({"key": "k", "value": "w"})).tolerates(&t));
        assert!(!tol(json!({"key": "k"})).tolerates(&t));
        assert!(tol(json!({"key": "k", "operator": "Exists"})).tolerates(&t));
        assert!(!tol(json!({"key": "j", "operator": "Exists"})).tolerates(&t));
        assert!(tol(json!({"operator": "Exists"})).tolerates(&t));
        assert!(!tol(json!({"operator": "Exists", "effect": "NoExecute"})).tolerates(&t));
        assert!(tol(json!({"operator": "Exists", "effect": ""})).tolerates(&t));
        assert!(!tol(json!({"key": "k", "operator": "Bogus"})).tolerates(&t));
        // Empty key with Equal: any key, value compared.
        assert!(tol(json!({"value": "v"})).tolerates(&t));
        assert!(tol(json!({"key": "k"})).tolerates(&taint("k", "", "PreferNoSchedule")));
    }

    fn req(key: &str, op: &str, values: &[&str]) -> api::NodeSelectorRequirement {
        api::NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn label_requirements() {
        let labels: BTreeMap<String, String> = [("zone", "a"), ("gen", "5"), ("bad", "x")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let m = |r: api::NodeSelectorRequirement| {
            LabelRequirement::parse(&r).map(|r| r.matches(&labels))
        };
        assert_eq!(m(req("zone", "In", &["a", "b"])), Some(true));
        assert_eq!(m(req("zone", "In", &["b"])), Some(false));
        assert_eq!(m(req("nope", "In", &["b"])), Some(false));
        assert_eq!(m(req("zone", "NotIn", &["b"])), Some(true));
        assert_eq!(m(req("zone", "NotIn", &["a"])), Some(false));
        assert_eq!(m(req("nope", "NotIn", &["a"])), Some(true));
        assert_eq!(m(req("zone", "Exists", &[])), Some(true));
        assert_eq!(m(req("nope", "Exists", &[])), Some(false));
        assert_eq!(m(req("nope", "DoesNotExist", &[])), Some(true));
        assert_eq!(m(req("zone", "DoesNotExist", &[])), Some(false));
        assert_eq!(m(req("gen", "Gt", &["4"])), Some(true));
        assert_eq!(m(req("gen", "Gt", &["5"])), Some(false));
        assert_eq!(m(req("gen", "Lt", &["6"])), Some(true));
        assert_eq!(m(req("bad", "Lt", &["6"])), Some(false));
        assert_eq!(m(req("nope", "Lt", &["6"])), Some(false));
        // Invalid requirements.
        assert_eq!(m(req("zone", "In", &[])), None);
        assert_eq!(m(req("zone", "Exists", &["a"])), None);
        assert_eq!(m(req("gen", "Gt", &["x"])), None);
        assert_eq!(m(req("gen", "Gt", &["1", "2"])), None);
        assert_eq!(m(req("gen", "Like", &["1"])), None);
    }

    #[test]
    fn terms_and_fields() {
        let labels: BTreeMap<String, String> = [("zone".to_string(), "a".to_string())].into();
        let term =
            |v: serde_json::Value| NodeSelectorTerm::parse(&serde_json::from_value(v).unwrap());
        assert_eq!(term(json!({})), None);
        assert_eq!(term(json!({"matchExpressions": []})), None);
        let t = term(
            json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}),
        )
        .unwrap();
        assert!(t.matches(&labels, "n1"));
        assert!(!t.matches(&labels, "n2"));
        let t = term(json!({"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}],
                            "matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}))
        .unwrap();
        assert!(!t.matches(&labels, "n1"));
        assert!(t.matches(&labels, "n2"));
        assert!(!t.matches(&BTreeMap::new(), "n2"));
        assert_eq!(
            term(
                json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a", "b"]}]})
            ),
            None
        );
        assert_eq!(
            term(json!({"matchFields": [{"key": "metadata.name", "operator": "Exists"}]})),
            None
        );
    }

    #[test]
    fn equality_selectors() {
        let labels: BTreeMap<String, String> = [
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ]
        .into();
        assert!(selector_matches(&[], &labels));
        assert!(selector_matches(&[("a".into(), "1".into())], &labels));
        assert!(!selector_matches(
            &[("a".into(), "1".into()), ("c".into(), "3".into())],
            &labels
        ));
        assert!(!selector_matches(&[("a".into(), "2".into())], &labels));
    }
}
