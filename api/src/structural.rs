//! Custom resources checked against their CustomResourceDefinition's `openAPIV3Schema`, as Kubernetes'
//! apiextensions server does: pruning of unknown fields, defaulting, validation, and the structural
//! schema rules a CRD's schema must follow.
//!
//! A schema that is not a JSON object (what `additionalProperties: true` stands for) allows anything.
//! `pattern` is not checked (the workspace takes no regex dependency).

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use crate::error::Cause;

const PRESERVE: &str = "x-kubernetes-preserve-unknown-fields";
const EMBEDDED: &str = "x-kubernetes-embedded-resource";
const INT_OR_STRING: &str = "x-kubernetes-int-or-string";
const LIST_TYPE: &str = "x-kubernetes-list-type";
const MAP_KEYS: &str = "x-kubernetes-list-map-keys";
const ADDITIONAL: &str = "additionalProperties";
const TYPES: [&str; 6] = ["object", "array", "string", "integer", "number", "boolean"];
const COMBINATORS: [&str; 3] = ["allOf", "anyOf", "oneOf"];
/// The schema of values nothing is declared about (`additionalProperties: true`).
static ANY: Value = Value::Null;

fn flag(s: &Value, key: &str) -> bool {
    s.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn props(s: &Value) -> impl Iterator<Item = (&String, &Value)> {
    s.get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
}

fn list<'a>(s: &'a Value, key: &str) -> &'a [Value] {
    s.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The schema of field `key` of an object following `s`, if it declares one.
fn child_schema<'a>(s: &'a Value, key: &str) -> Option<&'a Value> {
    let declared = s.get("properties").and_then(|p| p.get(key));
    declared.or_else(|| match s.get(ADDITIONAL) {
        Some(Value::Bool(true)) => Some(&ANY),
        Some(a @ Value::Object(_)) => Some(a),
        _ => None,
    })
}

fn field(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// Removes from `obj` (a whole custom resource: apiVersion, kind, metadata, and the rest) every field the
/// schema does not declare, returning the removed fields' paths (e.g. `spec.bogus`, `spec.items[2].x`).
/// Root `apiVersion`, `kind` and `metadata` are kept unpruned, as are those of
/// `x-kubernetes-embedded-resource` objects; `x-kubernetes-preserve-unknown-fields` keeps undeclared
/// fields (declared ones are still pruned); `additionalProperties` gives the schema of a map's values.
pub fn prune(schema: &Value, obj: &mut Value) -> Vec<String> {
    let mut out = Vec::new();
    prune_node(schema, obj, "", true, &mut out);
    out
}

fn prune_node(s: &Value, v: &mut Value, path: &str, resource: bool, out: &mut Vec<String>) {
    if !s.is_object() {
        return;
    }
    if let (Value::Array(items), Some(c)) = (&mut *v, s.get("items")) {
        for (i, x) in items.iter_mut().enumerate() {
            prune_node(c, x, &index(path, i), false, out);
        }
    }
    let Value::Object(map) = v else { return };
    let resource = resource || flag(s, EMBEDDED);
    let mut gone = Vec::new();
    for (k, x) in map.iter_mut() {
        if resource && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match child_schema(s, k) {
            Some(c) => prune_node(c, x, &field(path, k), false, out),
            None if flag(s, PRESERVE) => {}
            None => gone.push(k.clone()),
        }
    }
    for k in gone {
        map.remove(&k);
        out.push(field(path, &k));
    }
}

/// Fills `default` values from the schema where a field is absent, recursively (array items and
/// `additionalProperties` values included), as Kubernetes does after pruning. A `null` counts as absent
/// when the field's schema is not `nullable`; such a `null` object field without a default is removed.
pub fn apply_defaults(schema: &Value, obj: &mut Value) {
    if !schema.is_object() {
        return;
    }
    if let (Value::Array(items), Some(c)) = (&mut *obj, schema.get("items")) {
        for x in items.iter_mut() {
            if let (true, Some(d)) = (unwanted_null(x, c), c.get("default")) {
                *x = d.clone();
            }
            apply_defaults(c, x);
        }
    }
    let Value::Object(map) = obj else { return };
    for (k, p) in props(schema) {
        if let Some(d) = p.get("default")
            && map.get(k).is_none_or(|x| unwanted_null(x, p))
        {
            map.insert(k.clone(), d.clone());
        }
    }
    let mut gone = Vec::new();
    for (k, x) in map.iter_mut() {
        let Some(c) = child_schema(schema, k) else {
            continue;
        };
        match (unwanted_null(x, c), c.get("default")) {
            (true, Some(d)) => *x = d.clone(),
            (true, None) => gone.push(k.clone()),
            _ => {}
        }
        apply_defaults(c, x);
    }
    for k in gone {
        map.remove(&k);
    }
}

/// A `null` the schema does not allow (Kubernetes' `isNonNullableNull`).
fn unwanted_null(v: &Value, s: &Value) -> bool {
    v.is_null() && s.is_object() && !flag(s, "nullable")
}

/// Checks `obj` against the schema as Kubernetes' OpenAPI validator does: `type` (with `nullable` and
/// `x-kubernetes-int-or-string`), `required`, `enum`, numeric bounds, `multipleOf`, lengths and counts,
/// `uniqueItems`, cheap `format`s, `anyOf`/`allOf`/`oneOf`/`not`, and `x-kubernetes-list-type`
/// `set`/`map` uniqueness. The root object's `metadata` is not checked.
pub fn validate(schema: &Value, obj: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    check_value(schema, obj, "", true, &mut out);
    out
}

fn in_body(path: &str) -> String {
    if path.is_empty() {
        "body".into()
    } else {
        format!("{path} in body")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) if is_integer(v) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(v: &Value) -> bool {
    let integral = |f: f64| f.is_finite() && f.fract() == 0.0;
    v.is_i64() || v.is_u64() || v.as_f64().is_some_and(integral)
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "integer" => is_integer(v),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        "integer,string" => is_integer(v) || v.is_string(),
        _ => true,
    }
}

fn cause(reason: &'static str, path: &str, message: String) -> Cause {
    Cause {
        reason,
        message,
        field: path.to_string(),
    }
}

/// `Invalid value: <v>: <why>`, with `v` shown as JSON (strings quoted, numbers bare).
fn invalid(path: &str, v: &Value, why: &str) -> Cause {
    let message = format!("Invalid value: {v}: {why}");
    cause("FieldValueInvalid", path, message)
}

/// A canonical text of a JSON value: equal values (1 and 1.0 included) give equal texts.
fn canon(v: &Value) -> String {
    match v {
        Value::Number(n) if is_integer(v) && n.as_f64().is_some_and(|f| f.abs() < 9e15) => {
            format!("{}", n.as_f64().unwrap_or_default() as i64)
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canon).collect::<Vec<_>>().join(",")),
        Value::Object(m) => {
            let mut kv: Vec<String> = m
                .iter()
                .map(|(k, x)| format!("{k:?}:{}", canon(x)))
                .collect();
            kv.sort();
            format!("{{{}}}", kv.join(","))
        }
        _ => v.to_string(),
    }
}

fn check_value(s: &Value, v: &Value, path: &str, root: bool, out: &mut Vec<Cause>) {
    if !s.is_object() || (v.is_null() && flag(s, "nullable")) {
        return;
    }
    let (name, ios) = (in_body(path), flag(s, INT_OR_STRING));
    let ty = s.get("type").and_then(Value::as_str).filter(|_| !ios);
    if let Some(t) = ty.or(ios.then_some("integer,string"))
        && !type_ok(t, v)
    {
        let got = type_name(v);
        let why = format!("{name} must be of type {t}: \"{got}\"");
        return out.push(Cause::invalid(path, got, why));
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array)
        && !allowed.iter().any(|e| canon(e) == canon(v))
    {
        let plain = |x: &Value| x.as_str().map_or_else(|| x.to_string(), str::to_string);
        let names: Vec<String> = allowed.iter().map(plain).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        out.push(Cause::not_supported(path, &plain(v), &refs));
    }
    if let Some(f) = s.get("format").and_then(Value::as_str)
        && !format_ok(f, v)
    {
        let shown = v.as_str().map_or_else(|| v.to_string(), str::to_string);
        let why = format!("{name} must be of type {f}: {shown:?}");
        out.push(invalid(path, v, &why));
    }
    check_number(s, v, path, out);
    check_size(s, v, path, out);
    match v {
        Value::Array(items) => check_items(s, items, path, out),
        Value::Object(map) => check_object(s, map, path, root, out),
        _ => {}
    }
    check_combinators(s, v, path, root, out);
}

/// The `format`s that are cheap to check; the others pass.
fn format_ok(f: &str, v: &Value) -> bool {
    let Some(x) = v.as_str() else {
        let x = v.as_f64().unwrap_or_default();
        return match f {
            "int32" => !is_integer(v) || (f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&x),
            "int64" => !is_integer(v) || !v.is_u64() || v.is_i64(),
            _ => true,
        };
    };
    let base64 = |x: &str| {
        let body = x.trim_end_matches('=');
        let alphabet = |b: u8| b.is_ascii_alphanumeric() || b == b'+' || b == b'/';
        x.len().is_multiple_of(4) && x.len() - body.len() <= 2 && body.bytes().all(alphabet)
    };
    let uuid = |x: &str| {
        let ok = |(i, b): (usize, u8)| {
            if [8, 13, 18, 23].contains(&i) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        };
        x.len() == 36 && x.bytes().enumerate().all(ok)
    };
    match f {
        "date-time" => {
            x.parse::<jiff::Timestamp>().is_ok() || x.parse::<jiff::civil::DateTime>().is_ok()
        }
        "date" => x.parse::<jiff::civil::Date>().is_ok(),
        "byte" => base64(x),
        "uuid" => uuid(x),
        "ipv4" => x.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => x.parse::<std::net::Ipv6Addr>().is_ok(),
        _ => true,
    }
}

fn check_number(s: &Value, v: &Value, path: &str, out: &mut Vec<Cause>) {
    let Some(x) = v.as_f64() else { return };
    let name = in_body(path);
    let bounds = [
        ("minimum", "exclusiveMinimum", "greater"),
        ("maximum", "exclusiveMaximum", "less"),
    ];
    for (key, exclusive, word) in bounds {
        let Some(m) = s.get(key).filter(|m| m.is_number()) else {
            continue;
        };
        let (lim, excl) = (m.as_f64().unwrap_or_default(), flag(s, exclusive));
        if (if word == "greater" { x < lim } else { x > lim }) || (excl && x == lim) {
            let how = if excl { "" } else { " or equal to" };
            let why = format!("{name} should be {word} than{how} {m}");
            out.push(invalid(path, v, &why));
        }
    }
    if let Some(m) = s
        .get("multipleOf")
        .filter(|m| m.as_f64().is_some_and(|f| f > 0.0))
    {
        let q = x / m.as_f64().unwrap_or(1.0);
        if (q - q.round()).abs() > 1e-9 {
            let why = format!("{name} should be a multiple of {m}");
            out.push(invalid(path, v, &why));
        }
    }
}

/// `minLength`/`maxLength` (in characters), `minItems`/`maxItems`, `minProperties`/`maxProperties`.
fn check_size(s: &Value, v: &Value, path: &str, out: &mut Vec<Cause>) {
    let (n, keys, unit) = match v {
        Value::String(x) => (x.chars().count(), ["minLength", "maxLength"], "chars long"),
        Value::Array(a) => (a.len(), ["minItems", "maxItems"], "items"),
        Value::Object(m) => (m.len(), ["minProperties", "maxProperties"], "properties"),
        _ => return,
    };
    let limit = |k: &str| {
        s.get(k)
            .and_then(Value::as_u64)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
    };
    if let Some(max) = limit(keys[1]).filter(|max| n > *max) {
        let too_long = format!("Too long: may not be longer than {max}");
        let too_many = format!("Too many: {n}: must have at most {max} items");
        out.push(match v {
            Value::String(_) => cause("FieldValueTooLong", path, too_long),
            _ => cause("FieldValueTooMany", path, too_many),
        });
    }
    if let Some(min) = limit(keys[0]).filter(|min| n < *min) {
        let verb = if v.is_string() { "be" } else { "have" };
        let why = format!("{} should {verb} at least {min} {unit}", in_body(path));
        out.push(invalid(path, v, &why));
    }
}

/// Item schemas, and uniqueness for `uniqueItems` and `x-kubernetes-list-type: set|map`.
fn check_items(s: &Value, items: &[Value], path: &str, out: &mut Vec<Cause>) {
    let list_type = s.get(LIST_TYPE).and_then(Value::as_str);
    let keys: Vec<&str> = list(s, MAP_KEYS).iter().filter_map(Value::as_str).collect();
    let mut seen = HashSet::new();
    for (i, x) in items.iter().enumerate() {
        let key = if flag(s, "uniqueItems") || list_type == Some("set") {
            x.clone()
        } else if list_type == Some("map") && !keys.is_empty() && x.is_object() {
            let pick = |k: &&str| ((*k).to_string(), x.get(*k).cloned().unwrap_or(Value::Null));
            Value::Object(keys.iter().map(pick).collect())
        } else {
            continue;
        };
        if !seen.insert(canon(&key)) {
            let message = format!("Duplicate value: {key}");
            out.push(cause("FieldValueDuplicate", &index(path, i), message));
        }
    }
    if let Some(c) = s.get("items") {
        for (i, x) in items.iter().enumerate() {
            check_value(c, x, &index(path, i), false, out);
        }
    }
}

fn check_object(s: &Value, map: &Map<String, Value>, path: &str, root: bool, out: &mut Vec<Cause>) {
    for r in list(s, "required").iter().filter_map(Value::as_str) {
        if !(map.contains_key(r) || root && r == "metadata") {
            out.push(Cause::required(field(path, r)));
        }
    }
    for (k, x) in map {
        if let Some(c) = child_schema(s, k).filter(|_| !(root && k == "metadata")) {
            check_value(c, x, &field(path, k), false, out);
        }
    }
}

fn check_combinators(s: &Value, v: &Value, path: &str, root: bool, out: &mut Vec<Cause>) {
    let passes = |sub: &&Value| {
        let mut errs = Vec::new();
        check_value(sub, v, path, root, &mut errs);
        errs.is_empty()
    };
    for sub in list(s, "allOf") {
        check_value(sub, v, path, root, out);
    }
    let (any, one) = (list(s, "anyOf"), list(s, "oneOf"));
    let mut fails = Vec::new();
    if !any.is_empty() && !any.iter().any(|sub| passes(&sub)) {
        fails.push("must validate at least one schema (anyOf)");
    }
    if !one.is_empty() && one.iter().filter(passes).count() != 1 {
        fails.push("must validate one and only one schema (oneOf)");
    }
    if s.get("not").is_some_and(|not| passes(&not)) {
        fails.push("must not validate the schema (not)");
    }
    for why in fails {
        out.push(invalid(path, v, &format!("{} {why}", in_body(path))));
    }
}

/// The structural-schema rules a CRD version's `openAPIV3Schema` must follow (the essentials of
/// Kubernetes' `ValidateStructural` and CRD schema checks); `at` is the schema's path, e.g.
/// `spec.versions[0].schema.openAPIV3Schema`.
pub fn check_schema(schema: &Value, at: &str) -> Vec<Cause> {
    let (mut out, ty) = (Vec::new(), field(at, "type"));
    match schema.get("type") {
        Some(Value::String(t)) if t == "object" => {}
        Some(Value::String(t)) if !t.is_empty() => {
            out.push(Cause::invalid(ty, t, "must be object at the root"));
        }
        _ if schema.is_object() => out.push(required(&ty, "must not be empty at the root")),
        _ => {}
    }
    if let Some(meta) = schema.get("properties").and_then(|p| p.get("metadata")) {
        root_metadata(meta, &field(at, "properties.metadata"), &mut out);
    }
    check_node(schema, at, "", &mut out);
    out
}

fn required(path: &str, why: &str) -> Cause {
    cause("FieldValueRequired", path, format!("Required value: {why}"))
}

fn root_metadata(meta: &Value, path: &str, out: &mut Vec<Cause>) {
    let Some(obj) = meta.as_object() else { return };
    if let Some(t) = obj.get("type").filter(|t| t.as_str() != Some("object")) {
        out.push(invalid(&field(path, "type"), t, "must be object"));
    }
    let named = |p: &Map<String, Value>| p.keys().all(|k| k == "name" || k == "generateName");
    let other = obj.iter().any(|(k, v)| match k.as_str() {
        "type" | "description" | "title" => false,
        "properties" => !v.as_object().is_some_and(named),
        _ => true,
    });
    if other {
        let why = "must not specify anything other than name and generateName, \
                   but metadata is implicitly specified";
        out.push(Cause::forbidden(path, why));
    }
}

/// `anyOf: [{type: integer}, {type: string}]`, allowed next to `x-kubernetes-int-or-string: true`.
fn int_or_string_any_of(v: &Value) -> bool {
    let pair = json!([{"type": "integer"}, {"type": "string"}]);
    let alone = v
        .as_object()
        .is_some_and(|o| o.len() == 1 || o.contains_key(INT_OR_STRING));
    v.get("anyOf") == Some(&pair) && alone
}

/// The node's `type`, reporting unknown ones.
fn node_type<'a>(t: Option<&'a Value>, path: &str, out: &mut Vec<Cause>) -> &'a str {
    match t {
        None => "",
        Some(Value::String(t)) if t.is_empty() || TYPES.contains(&t.as_str()) => t.as_str(),
        Some(Value::String(t)) => {
            out.push(Cause::not_supported(path, t, &TYPES));
            "?"
        }
        Some(t) => {
            out.push(invalid(path, t, "must be a string"));
            "?"
        }
    }
}

const EMPTY_EMBEDDED: &str = "must not be empty if x-kubernetes-embedded-resource is true \
                              without x-kubernetes-preserve-unknown-fields";
const QUADRATIC: &str =
    "uniqueItems cannot be set to true since the runtime complexity becomes quadratic";

fn check_node(s: &Value, path: &str, what: &str, out: &mut Vec<Cause>) {
    let Some(obj) = s.as_object() else {
        return out.push(invalid(path, s, "must be a schema object"));
    };
    let ty = node_type(obj.get("type"), &field(path, "type"), out);
    let (ios, preserve, embedded) = (flag(s, INT_OR_STRING), flag(s, PRESERVE), flag(s, EMBEDDED));
    let list_type = obj.get(LIST_TYPE).and_then(Value::as_str);
    let has = |k: &str| obj.contains_key(k);
    let no_additional = obj.get(ADDITIONAL) == Some(&Value::Bool(false));
    let untyped = format!("must not be empty for specified {what}");
    let rules = [
        (
            ty.is_empty() && !what.is_empty() && !ios && !preserve,
            "type",
            'r',
            untyped.as_str(),
        ),
        (
            ios && !ty.is_empty(),
            "type",
            'i',
            "must be empty if x-kubernetes-int-or-string is true",
        ),
        (
            embedded && ty != "object",
            "type",
            'i',
            "must be object if x-kubernetes-embedded-resource is true",
        ),
        (
            embedded && !preserve && props(s).next().is_none(),
            "properties",
            'r',
            EMPTY_EMBEDDED,
        ),
        (
            no_additional,
            ADDITIONAL,
            'f',
            "additionalProperties cannot be set to false",
        ),
        (
            has(ADDITIONAL) && has("properties") && !no_additional,
            ADDITIONAL,
            'f',
            "additionalProperties and properties are mutual exclusive",
        ),
        (
            ty == "array" && !has("items"),
            "items",
            'r',
            "must be specified",
        ),
        (
            obj.get("items").is_some_and(Value::is_array),
            "items",
            'f',
            "items must be a schema object and not an array",
        ),
        (flag(s, "uniqueItems"), "uniqueItems", 'f', QUADRATIC),
        (
            list_type == Some("map") && list(s, MAP_KEYS).is_empty(),
            MAP_KEYS,
            'r',
            "must not be empty if x-kubernetes-list-type is map",
        ),
        (
            list_type != Some("map") && has(MAP_KEYS),
            MAP_KEYS,
            'f',
            "must not be set if x-kubernetes-list-type is not map",
        ),
        (
            obj.get(PRESERVE).is_some_and(|p| *p != Value::Bool(true)),
            PRESERVE,
            'f',
            "must be true or undefined",
        ),
    ];
    for (_, key, kind, why) in rules.into_iter().filter(|rule| rule.0) {
        let at = field(path, key);
        out.push(match kind {
            'r' => required(&at, why),
            'f' => Cause::forbidden(at, why),
            _ => Cause::invalid(at, ty, why),
        });
    }
    if let Some(t) = list_type.filter(|t| !["atomic", "set", "map"].contains(t)) {
        out.push(Cause::not_supported(
            field(path, LIST_TYPE),
            t,
            &["atomic", "set", "map"],
        ));
    }
    if let Some(d) = obj.get("default") {
        check_default(s, d, &field(path, "default"), out);
    }
    check_children(s, path, ios, out);
}

fn check_children(s: &Value, path: &str, ios: bool, out: &mut Vec<Cause>) {
    for (k, c) in props(s) {
        check_node(c, &format!("{path}.properties.{k}"), "object fields", out);
    }
    if let Some(c @ Value::Object(_)) = s.get("items") {
        check_node(c, &field(path, "items"), "array items", out);
    }
    if let Some(c @ Value::Object(_)) = s.get(ADDITIONAL) {
        check_node(c, &field(path, ADDITIONAL), "object fields", out);
    }
    let mut subs: Vec<(String, &Value)> = Vec::new();
    for k in COMBINATORS {
        let skip = |sub: &Value| ios && int_or_string_any_of(sub);
        if k == "anyOf" && skip(s) {
            continue; // kubebuilder's int-or-string form: the anyOf belongs to the extension.
        }
        let entries = list(s, k).iter().enumerate().filter(|(_, sub)| !skip(sub));
        subs.extend(entries.map(|(i, sub)| (index(k, i), sub)));
    }
    subs.extend(s.get("not").map(|sub| ("not".to_string(), sub)));
    for (rel, sub) in subs {
        let at = (field(path, &rel), path.to_string(), rel);
        value_only(Some(s), sub, &at, out);
    }
}

/// A `default` must validate and survive pruning unchanged (after its own nested defaults apply).
fn check_default(s: &Value, d: &Value, path: &str, out: &mut Vec<Cause>) {
    let mut x = d.clone();
    apply_defaults(s, &mut x);
    check_value(s, &x, path, false, out);
    let mut pruned = Vec::new();
    prune_node(s, &mut x, "", false, &mut pruned);
    if !pruned.is_empty() {
        out.push(invalid(path, d, "must not have unknown fields"));
    }
}

/// A value validation `vv` (inside anyOf/allOf/oneOf/not) may not set `type`, `default`, `nullable`,
/// `additionalProperties` or `x-kubernetes-*`, and every field it mentions must be in the structural
/// schema `s`. `at` is (`vv`'s path, the structural node's path, `vv`'s path below that node).
fn value_only(s: Option<&Value>, vv: &Value, at: &(String, String, String), out: &mut Vec<Cause>) {
    let (path, node, rel) = at;
    let Some(obj) = vv.as_object() else {
        return out.push(invalid(path, vv, "must be a schema object"));
    };
    for (k, x) in obj {
        let why = match k.as_str() {
            "type" if x.as_str() != Some("") => "must be empty to be structural",
            "nullable" if *x != Value::Bool(false) => "must be false to be structural",
            "default" | ADDITIONAL => "must be undefined to be structural",
            _ if !k.starts_with("x-kubernetes-") || *x == Value::Bool(false) => continue,
            _ if x.is_boolean() => "must be false to be structural",
            _ => "must be undefined to be structural",
        };
        out.push(Cause::forbidden(field(path, k), why));
    }
    let mut nested: Vec<(String, Option<&Value>, &Value)> = Vec::new();
    for (k, sub) in props(vv) {
        let c = s.and_then(|s| child_schema(s, k));
        nested.push((format!("properties.{k}"), c, sub));
    }
    if let Some(sub) = obj.get("items") {
        nested.push(("items".into(), s.and_then(|s| s.get("items")), sub));
    }
    for (key, c, sub) in nested {
        let below = (field(path, &key), field(node, &key), field(rel, &key));
        if s.is_some() && c.is_none() {
            out.push(required(
                &below.1,
                &format!("because it is defined in {}", below.2),
            ));
        }
        value_only(c, sub, &below, out);
    }
    let mut subs: Vec<(String, &Value)> = Vec::new();
    for k in COMBINATORS {
        subs.extend(
            list(vv, k)
                .iter()
                .enumerate()
                .map(|(i, sub)| (index(k, i), sub)),
        );
    }
    subs.extend(obj.get("not").map(|sub| ("not".to_string(), sub)));
    for (key, sub) in subs {
        let below = (field(path, &key), node.clone(), field(rel, &key));
        value_only(s, sub, &below, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc_schema() -> Value {
        json!({"type":"object","properties":{
            "spec":{"type":"object","properties":{
                "title":{"type":"string"},
                "count":{"type":"integer","format":"int32","minimum":0},
                "tags":{"type":"array","items":{"type":"string"}}},"required":["title"]},
            "status":{"type":"object","nullable":true,"properties":{"phase":{"type":"string"}}}},
            "required":["spec"],"title":"Document"})
    }

    fn spec(props: Value) -> Value {
        json!({"type":"object","properties":{"spec":{"type":"object","properties":props}}})
    }

    fn show(causes: Vec<Cause>) -> Vec<String> {
        causes
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    fn strings(v: &Value) -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn prunes_unknown_fields_keeping_root_metadata() {
        let mut obj = json!({"apiVersion":"a/v1","kind":"Document","metadata":{"name":"d","x":1},
            "spec":{"title":"t","bogus":1,"tags":["a"]},"extra":true});
        assert_eq!(prune(&doc_schema(), &mut obj), vec!["spec.bogus", "extra"]);
        let want = json!({"apiVersion":"a/v1","kind":"Document","metadata":{"name":"d","x":1},
            "spec":{"title":"t","tags":["a"]}});
        assert_eq!(obj, want);
    }

    #[test]
    fn prunes_arrays_maps_preserved_and_embedded() {
        let schema = spec(json!({
            "items":{"type":"array","items":{"type":"object","properties":{"a":{"type":"string"}}}},
            "labels":{"type":"object","additionalProperties":{"type":"object","properties":{"v":{"type":"integer"}}}},
            "any":{"type":"object","additionalProperties":true},
            "free":{"type":"object","x-kubernetes-preserve-unknown-fields":true,
                "properties":{"known":{"type":"object","properties":{"k":{"type":"string"}}}}},
            "pod":{"type":"object","x-kubernetes-embedded-resource":true,"properties":{"spec":{"type":"object"}}},
            "port":{"x-kubernetes-int-or-string":true},
            "o":{"type":"object","anyOf":[{"properties":{"a":{}}}]}}));
        let mut obj = json!({"spec":{
            "items":[{"a":"1"},{"a":"2"},{"a":"3","x":0}],
            "labels":{"one":{"v":1,"w":2}},
            "any":{"deep":{"z":1}},
            "free":{"whatever":{"z":1},"known":{"k":"","drop":1}},
            "pod":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{},"status":{}},
            "port":{"a":1},"o":{"a":1}}});
        let mut removed = prune(&schema, &mut obj);
        removed.sort();
        let want = [
            "spec.free.known.drop",
            "spec.items[2].x",
            "spec.labels.one.w",
            "spec.o.a",
            "spec.pod.status",
            "spec.port.a",
        ];
        assert_eq!(removed, want);
        assert_eq!(obj["spec"]["free"]["whatever"], json!({"z":1}));
        assert_eq!(obj["spec"]["any"], json!({"deep":{"z":1}}));
        let pod = json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{}});
        assert_eq!(obj["spec"]["pod"], pod);
    }

    #[test]
    fn defaults_fill_absent_fields_only_under_existing_parents() {
        let schema = spec(json!({
            "replicas":{"type":"integer","default":1},
            "opt":{"type":"string","nullable":true,"default":"d"},
            "gone":{"type":"string"},
            "nested":{"type":"object","properties":{"a":{"type":"string","default":"x"}}},
            "withDefault":{"type":"object","default":{},"properties":{"b":{"type":"integer","default":2}}},
            "list":{"type":"array","items":{"type":"object","properties":{"p":{"type":"integer","default":80}}}},
            "map":{"type":"object","additionalProperties":{"type":"object","properties":{"q":{"type":"boolean","default":true}}}}}));
        let mut obj = json!({"spec":{"opt":null,"gone":null,"list":[{},{"p":1}],"map":{"k":{}}}});
        apply_defaults(&schema, &mut obj);
        let want = json!({"spec":{"replicas":1,"opt":null,"withDefault":{"b":2},
            "list":[{"p":80},{"p":1}],"map":{"k":{"q":true}}}});
        assert_eq!(obj, want);
        let mut obj = json!({"spec":{"replicas":null,"nested":{}}});
        apply_defaults(&schema, &mut obj);
        assert_eq!(obj["spec"]["replicas"], json!(1));
        assert_eq!(obj["spec"]["nested"], json!({"a":"x"}));
        let mut bare = json!({"apiVersion":"a/v1"});
        apply_defaults(&schema, &mut bare);
        assert_eq!(bare, json!({"apiVersion":"a/v1"}));
    }

    #[test]
    fn validates_types_required_and_nullable() {
        let schema = doc_schema();
        let ok = json!({"metadata":{"name":1},"spec":{"title":"t","count":3,"tags":["a"]},"status":null});
        assert_eq!(validate(&schema, &ok), vec![]);
        let bad = show(validate(
            &schema,
            &json!({"spec":{"count":"string","tags":[1]}}),
        ));
        assert_eq!(
            bad,
            [
                "spec.title: Required value",
                r#"spec.count: Invalid value: "string": spec.count in body must be of type integer: "string""#,
                r#"spec.tags[0]: Invalid value: "integer": spec.tags[0] in body must be of type string: "integer""#,
            ]
        );
        assert_eq!(validate(&schema, &json!({}))[0], Cause::required("spec"));
    }

    #[test]
    fn validates_each_keyword() {
        // Each case: the schema of `spec.x`, a value of `spec.x`, the causes as `field: message`.
        let cases = json!([
            [{"type":"integer"}, 2.0, []],
            [{"type":"number"}, 2.5, []],
            [{"type":"boolean"}, null, [r#"spec.x: Invalid value: "null": spec.x in body must be of type boolean: "null""#]],
            [{"type":"boolean","nullable":true}, null, []],
            [{"x-kubernetes-int-or-string":true}, "80%", []],
            [{"x-kubernetes-int-or-string":true}, true, [r#"spec.x: Invalid value: "boolean": spec.x in body must be of type integer,string: "boolean""#]],
            [{"type":"string","enum":["a","b"]}, "x", [r#"spec.x: Unsupported value: "x": supported values: "a", "b""#]],
            [{"type":"integer","enum":[1,2]}, 2.0, []],
            [{"type":"integer","minimum":3}, 2, ["spec.x: Invalid value: 2: spec.x in body should be greater than or equal to 3"]],
            [{"type":"integer","minimum":3,"exclusiveMinimum":true}, 3, ["spec.x: Invalid value: 3: spec.x in body should be greater than 3"]],
            [{"type":"number","maximum":1.5}, 2, ["spec.x: Invalid value: 2: spec.x in body should be less than or equal to 1.5"]],
            [{"type":"number","maximum":2,"exclusiveMaximum":true}, 2, ["spec.x: Invalid value: 2: spec.x in body should be less than 2"]],
            [{"type":"number","multipleOf":0.5}, 1.5, []],
            [{"type":"integer","multipleOf":5}, 7, ["spec.x: Invalid value: 7: spec.x in body should be a multiple of 5"]],
            [{"type":"integer","format":"int32"}, 3_000_000_000_u64, [r#"spec.x: Invalid value: 3000000000: spec.x in body must be of type int32: "3000000000""#]],
            [{"type":"string","maxLength":2}, "äöü", ["spec.x: Too long: may not be longer than 2"]],
            [{"type":"string","maxLength":3}, "äöü", []],
            [{"type":"string","minLength":2}, "a", [r#"spec.x: Invalid value: "a": spec.x in body should be at least 2 chars long"#]],
            [{"type":"string","format":"date-time"}, "2024-05-01T10:00:00Z", []],
            [{"type":"string","format":"date-time"}, "soon", [r#"spec.x: Invalid value: "soon": spec.x in body must be of type date-time: "soon""#]],
            [{"type":"string","format":"date"}, "2024-13-01", [r#"spec.x: Invalid value: "2024-13-01": spec.x in body must be of type date: "2024-13-01""#]],
            [{"type":"string","format":"byte"}, "aGk=", []],
            [{"type":"string","format":"byte"}, "a*==", [r#"spec.x: Invalid value: "a*==": spec.x in body must be of type byte: "a*==""#]],
            [{"type":"string","format":"uuid"}, "123e4567-e89b-12d3-a456-426614174000", []],
            [{"type":"string","format":"ipv4"}, "::1", [r#"spec.x: Invalid value: "::1": spec.x in body must be of type ipv4: "::1""#]],
            [{"type":"array","maxItems":1,"items":{}}, [1, 2], ["spec.x: Too many: 2: must have at most 1 items"]],
            [{"type":"array","minItems":1,"items":{}}, [], ["spec.x: Invalid value: []: spec.x in body should have at least 1 items"]],
            [{"type":"array","uniqueItems":true}, [1, 2, 1.0], ["spec.x[2]: Duplicate value: 1.0"]],
            [{"type":"array","x-kubernetes-list-type":"set"}, ["a", "b", "a"], [r#"spec.x[2]: Duplicate value: "a""#]],
            [{"type":"array","x-kubernetes-list-type":"map","x-kubernetes-list-map-keys":["name","proto"]},
                [{"name":"a","proto":"TCP"},{"name":"a","proto":"UDP"}], []],
            [{"type":"array","x-kubernetes-list-type":"map","x-kubernetes-list-map-keys":["name","proto"]},
                [{"name":"a","proto":"TCP","p":1},{"name":"a","proto":"TCP","p":2}], [r#"spec.x[1]: Duplicate value: {"name":"a","proto":"TCP"}"#]],
            [{"type":"object","maxProperties":1}, {"a":1,"b":2}, ["spec.x: Too many: 2: must have at most 1 items"]],
            [{"type":"object","minProperties":1}, {}, ["spec.x: Invalid value: {}: spec.x in body should have at least 1 properties"]],
            [{"type":"object","additionalProperties":{"type":"string"}}, {"k":1}, [r#"spec.x.k: Invalid value: "integer": spec.x.k in body must be of type string: "integer""#]],
            [{"type":"object","anyOf":[{"required":["a"]},{"required":["b"]}]}, {"b":1}, []],
            [{"type":"object","anyOf":[{"required":["a"]},{"required":["b"]}]}, {"c":1}, [r#"spec.x: Invalid value: {"c":1}: spec.x in body must validate at least one schema (anyOf)"#]],
            [{"type":"integer","oneOf":[{"minimum":1},{"maximum":5}]}, 9, []],
            [{"type":"integer","oneOf":[{"minimum":1},{"maximum":5}]}, 3, ["spec.x: Invalid value: 3: spec.x in body must validate one and only one schema (oneOf)"]],
            [{"type":"integer","allOf":[{"minimum":1},{"maximum":5}]}, 9, ["spec.x: Invalid value: 9: spec.x in body should be less than or equal to 5"]],
            [{"type":"string","not":{"enum":["x"]}}, "x", [r#"spec.x: Invalid value: "x": spec.x in body must not validate the schema (not)"#]],
            [{"x-kubernetes-int-or-string":true,"anyOf":[{"type":"integer"},{"type":"string"}]}, "a", []]
        ]);
        for case in cases.as_array().unwrap() {
            let got = validate(
                &spec(json!({ "x": case[0] })),
                &json!({"spec": {"x": case[1]}}),
            );
            assert_eq!(show(got), strings(&case[2]), "{case}");
        }
    }

    #[test]
    fn accepts_structural_schemas() {
        assert_eq!(check_schema(&doc_schema(), "s"), vec![]);
        let schema = json!({"type":"object","properties":{
            "metadata":{"type":"object","properties":{"name":{"type":"string","maxLength":20}}},
            "port":{"x-kubernetes-int-or-string":true,"anyOf":[{"type":"integer"},{"type":"string"}]},
            "free":{"x-kubernetes-preserve-unknown-fields":true},
            "pod":{"type":"object","x-kubernetes-embedded-resource":true,"x-kubernetes-preserve-unknown-fields":true},
            "m":{"type":"object","additionalProperties":{"type":"string"}},
            "l":{"type":"array","x-kubernetes-list-type":"map","x-kubernetes-list-map-keys":["n"],
                "items":{"type":"object","properties":{"n":{"type":"string"}},"default":{"n":"a"}}},
            "o":{"type":"object","properties":{"a":{"type":"string"}},
                "oneOf":[{"required":["a"]},{"properties":{"a":{"minLength":1}}}]}}});
        assert_eq!(check_schema(&schema, "s"), vec![]);
    }

    #[test]
    fn rejects_non_structural_schemas() {
        let root = show(check_schema(&json!({"type":"string"}), "s"));
        assert_eq!(
            root,
            [r#"s.type: Invalid value: "string": must be object at the root"#]
        );
        let root = show(check_schema(&json!({"properties":{}}), "s"));
        assert_eq!(
            root,
            ["s.type: Required value: must not be empty at the root"]
        );
        let schema = json!({"type":"object","properties":{
            "a":{"properties":{}},
            "b":{"type":"object","properties":{},"additionalProperties":{"type":"string"}},
            "c":{"type":"array"},
            "d":{"type":"object","anyOf":[{"type":"object","nullable":true,"default":{},"properties":{"z":{}}}]},
            "e":{"type":"string","default":5},
            "f":{"type":"object","default":{"u":1},"properties":{}},
            "g":{"type":"array","items":{"type":"string"},"x-kubernetes-list-type":"map"},
            "h":{"type":"thing"},
            "i":{"type":"object","additionalProperties":false},
            "metadata":{"type":"object","properties":{"labels":{"type":"object"}}}}});
        assert_eq!(
            show(check_schema(&schema, "s")),
            [
                "s.properties.metadata: Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified",
                "s.properties.a.type: Required value: must not be empty for specified object fields",
                "s.properties.b.additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive",
                "s.properties.c.items: Required value: must be specified",
                "s.properties.d.anyOf[0].default: Forbidden: must be undefined to be structural",
                "s.properties.d.anyOf[0].nullable: Forbidden: must be false to be structural",
                "s.properties.d.anyOf[0].type: Forbidden: must be empty to be structural",
                "s.properties.d.properties.z: Required value: because it is defined in anyOf[0].properties.z",
                r#"s.properties.e.default: Invalid value: "integer": s.properties.e.default in body must be of type string: "integer""#,
                r#"s.properties.f.default: Invalid value: {"u":1}: must not have unknown fields"#,
                "s.properties.g.x-kubernetes-list-map-keys: Required value: must not be empty if x-kubernetes-list-type is map",
                r#"s.properties.h.type: Unsupported value: "thing": supported values: "object", "array", "string", "integer", "number", "boolean""#,
                "s.properties.i.additionalProperties: Forbidden: additionalProperties cannot be set to false",
            ]
        );
    }

    #[test]
    fn never_panics_on_odd_input() {
        let odd = json!([null, 1, {"type":["a"],"items":[1],"properties":5,"anyOf":{},"not":3},
            {"type":"object","properties":{"a":7},"minimum":"x","maxLength":-1,"enum":5,"anyOf":[3]}]);
        for s in odd.as_array().unwrap() {
            for mut v in [
                json!(null),
                json!({"a":[1,{"b":null}]}),
                json!([1e300, -1, "x"]),
            ] {
                let _ = (check_schema(s, ""), validate(s, &v));
                apply_defaults(s, &mut v);
                let _ = prune(s, &mut v);
            }
        }
    }
}
