//! Syntax checks shared by every kind: names, label keys and values, annotations, ports, metadata.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::error::Cause;

/// Which naming rule a kind's `metadata.name` follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain: lowercase alphanumerics, '-' and '.', at most 253 characters.
    Subdomain,
    /// RFC 1123 label: lowercase alphanumerics and '-', at most 63 characters.
    Label,
    /// RFC 1035 label: like `Label` but must start with a letter (Services).
    Rfc1035,
    /// Anything that is a valid path segment (Events and other names that include dots and colons).
    PathSegment,
}

impl NameRule {
    /// Checks `name` against the rule.
    pub fn check(self, name: &str) -> Result<(), String> {
        match self {
            NameRule::Subdomain => dns1123_subdomain(name),
            NameRule::Label => dns1123_label(name),
            NameRule::Rfc1035 => dns1035_label(name),
            NameRule::PathSegment => path_segment(name),
        }
    }
}

fn is_alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// RFC 1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn dns1123_label(s: &str) -> Result<(), String> {
    const MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
    if s.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    let ok = !s.is_empty()
        && s.chars().all(|c| is_alnum_lower(c) || c == '-')
        && s.starts_with(is_alnum_lower)
        && s.ends_with(is_alnum_lower);
    if ok { Ok(()) } else { Err(MSG.into()) }
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    const MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
    if s.len() > 253 {
        return Err("must be no more than 253 characters".into());
    }
    let ok = !s.is_empty()
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.chars().all(|c| is_alnum_lower(c) || c == '-')
                && l.starts_with(is_alnum_lower)
                && l.ends_with(is_alnum_lower)
        });
    if ok { Ok(()) } else { Err(MSG.into()) }
}

/// RFC 1035 label: `[a-z]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn dns1035_label(s: &str) -> Result<(), String> {
    const MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
    if s.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    if dns1123_label(s).is_ok() && s.starts_with(|c: char| c.is_ascii_lowercase()) {
        Ok(())
    } else {
        Err(MSG.into())
    }
}

/// A name usable as a URL path segment: not `.` or `..`, no `/` or `%`.
pub fn path_segment(s: &str) -> Result<(), String> {
    if s == "." || s == ".." {
        return Err(format!("may not be '{s}'"));
    }
    if s.contains('/') || s.contains('%') {
        return Err("may not contain '/' or '%'".into());
    }
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(())
}

fn qualified_name_part(s: &str) -> Result<(), String> {
    const MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    if s.is_empty() {
        return Err("name part must be non-empty".into());
    }
    if s.len() > 63 {
        return Err("name part must be no more than 63 characters".into());
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    if s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
        && s.starts_with(alnum)
        && s.ends_with(alnum)
    {
        Ok(())
    } else {
        Err(MSG.into())
    }
}

/// A label or annotation key: `[prefix/]name`, prefix a DNS subdomain, name at most 63 characters.
pub fn qualified_name(s: &str) -> Result<(), String> {
    match s.split_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() {
                return Err("prefix part must be non-empty".into());
            }
            dns1123_subdomain(prefix).map_err(|e| format!("prefix part {e}"))?;
            if name.contains('/') {
                return Err("a qualified name may contain at most one '/'".into());
            }
            qualified_name_part(name)
        }
        None => qualified_name_part(s),
    }
}

/// A label value: empty, or at most 63 characters of `[A-Za-z0-9-_.]` starting and ending alphanumeric.
pub fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    if s.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    if s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
        && s.starts_with(alnum)
        && s.ends_with(alnum)
    {
        Ok(())
    } else {
        Err("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".into())
    }
}

/// Checks a label map; causes are reported under `path`.
pub fn labels(map: &BTreeMap<String, String>, path: &str, out: &mut Vec<Cause>) {
    for (k, v) in map {
        if let Err(e) = qualified_name(k) {
            out.push(Cause::invalid(path, k, e));
        }
        if let Err(e) = label_value(v) {
            out.push(Cause::invalid(path, v, e));
        }
    }
}

/// Total size limit of all annotations on one object.
pub const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

/// Checks an annotation map: keys are qualified names, total size at most 256 KiB.
pub fn annotations(map: &BTreeMap<String, String>, path: &str, out: &mut Vec<Cause>) {
    let mut total = 0;
    for (k, v) in map {
        total += k.len() + v.len();
        if let Err(e) = qualified_name(&k.to_lowercase()) {
            out.push(Cause::invalid(path, k, e));
        }
    }
    if total > ANNOTATIONS_MAX_BYTES {
        out.push(Cause {
            reason: "FieldValueTooLong",
            message: format!("Too long: may not be more than {ANNOTATIONS_MAX_BYTES} bytes"),
            field: path.into(),
        });
    }
}

/// A TCP/UDP port number in 1..=65535.
pub fn port(p: i32, path: &str, out: &mut Vec<Cause>) {
    if !(1..=65535).contains(&p) {
        out.push(Cause::invalid(
            path,
            p,
            "must be between 1 and 65535, inclusive",
        ));
    }
}

/// An IANA service name as used for named ports: at most 15 characters, lowercase alphanumerics and '-', with a letter.
pub fn port_name(name: &str, path: &str, out: &mut Vec<Cause>) {
    let ok = name.len() <= 15
        && name.chars().all(|c| is_alnum_lower(c) || c == '-')
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if !ok {
        out.push(Cause::invalid(
            path,
            name,
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-); must contain at least one letter (a-z); must be no more than 15 characters",
        ));
    }
}

/// Checks the parts of `metadata` every object shares. `namespaced` says whether the kind lives in a namespace.
pub fn object_meta(meta: &ObjectMeta, namespaced: bool, rule: NameRule, out: &mut Vec<Cause>) {
    match meta.name.as_deref() {
        None | Some("") => {
            if meta.generate_name.as_deref().unwrap_or("").is_empty() {
                out.push(
                    Cause::required("metadata.name")
                        .with_message("name or generateName is required"),
                );
            }
        }
        Some(name) => {
            if let Err(e) = rule.check(name) {
                out.push(Cause::invalid("metadata.name", name, e));
            }
        }
    }
    match (namespaced, meta.namespace.as_deref().unwrap_or("")) {
        (true, "") => out.push(Cause::required("metadata.namespace")),
        (true, ns) => {
            if let Err(e) = dns1123_label(ns) {
                out.push(Cause::invalid("metadata.namespace", ns, e));
            }
        }
        (false, "") => {}
        (false, _) => out.push(Cause::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        )),
    }
    if let Some(l) = &meta.labels {
        labels(l, "metadata.labels", out);
    }
    if let Some(a) = &meta.annotations {
        annotations(a, "metadata.annotations", out);
    }
    for (i, f) in meta.finalizers.iter().flatten().enumerate() {
        if let Err(e) = qualified_name(f) {
            out.push(Cause::invalid(format!("metadata.finalizers[{i}]"), f, e));
        }
    }
    for (i, o) in meta.owner_references.iter().flatten().enumerate() {
        let p = format!("metadata.ownerReferences[{i}]");
        if o.api_version.is_empty() {
            out.push(Cause::required(format!("{p}.apiVersion")));
        }
        if o.kind.is_empty() {
            out.push(Cause::required(format!("{p}.kind")));
        }
        if o.name.is_empty() {
            out.push(Cause::required(format!("{p}.name")));
        }
        if o.uid.is_empty() {
            out.push(Cause::required(format!("{p}.uid")));
        }
    }
    if meta
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.controller == Some(true))
        .count()
        > 1
    {
        out.push(Cause::invalid(
            "metadata.ownerReferences",
            "",
            "Only one reference can have Controller set to true",
        ));
    }
}

impl Cause {
    /// The same cause with another message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }
}

/// Checks an IPv4 or IPv6 address.
pub fn ip(s: &str, path: &str, out: &mut Vec<Cause>) {
    if s.parse::<std::net::IpAddr>().is_err() {
        out.push(Cause::invalid(
            path,
            s,
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(dns1123_subdomain("web-1.example").is_ok());
        assert!(dns1123_subdomain("Web").is_err());
        assert!(dns1123_subdomain("-a").is_err());
        assert!(dns1123_subdomain("a..b").is_err());
        assert!(dns1123_subdomain(&"a".repeat(254)).is_err());
        assert!(dns1123_label("a.b").is_err());
        assert!(dns1035_label("1abc").is_err());
        assert!(dns1035_label("abc1").is_ok());
        assert!(path_segment("..").is_err());
    }

    #[test]
    fn label_keys_and_values() {
        assert!(qualified_name("app.kubernetes.io/name").is_ok());
        assert!(qualified_name("/name").is_err());
        assert!(qualified_name("a/b/c").is_err());
        assert!(qualified_name("UPPER_ok.1").is_ok());
        assert!(label_value("").is_ok());
        assert!(label_value("v1.2_3-x").is_ok());
        assert!(label_value("bad value").is_err());
        assert!(label_value(&"x".repeat(64)).is_err());
    }

    #[test]
    fn meta_requires_name_and_namespace() {
        let mut out = vec![];
        object_meta(&ObjectMeta::default(), true, NameRule::Subdomain, &mut out);
        let fields: Vec<&str> = out.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["metadata.name", "metadata.namespace"]);
    }
}
