//! `meta.k8s.io/v1 Table` support: column definitions and the helpers kinds use to print rows.

use std::borrow::Cow;

use serde_json::{Value, json};

/// One Table column (the built-in kinds' are constants; custom resources' come from their CRD).
#[derive(Debug, Clone)]
pub struct Column {
    /// Header as kubectl prints it, e.g. `NAME`.
    pub name: Cow<'static, str>,
    /// OpenAPI type: `string`, `integer`, `number`, `boolean`, `date`.
    pub kind: Cow<'static, str>,
    /// Format hint: `name` for the NAME column, otherwise "".
    pub format: Cow<'static, str>,
    /// 0 for default output, 1 for `-o wide` only.
    pub priority: u8,
    /// What the column shows.
    pub description: Cow<'static, str>,
}

impl Column {
    /// A column of OpenAPI type `kind` shown at `priority` (0: default output, 1: `-o wide`).
    pub const fn new(
        name: &'static str,
        kind: &'static str,
        priority: u8,
        description: &'static str,
    ) -> Self {
        Column {
            name: Cow::Borrowed(name),
            kind: Cow::Borrowed(kind),
            format: Cow::Borrowed(""),
            priority,
            description: Cow::Borrowed(description),
        }
    }
    /// A default-output string column.
    pub const fn text(name: &'static str, description: &'static str) -> Self {
        Column {
            name: Cow::Borrowed(name),
            kind: Cow::Borrowed("string"),
            format: Cow::Borrowed(""),
            priority: 0,
            description: Cow::Borrowed(description),
        }
    }
    /// A `-o wide` string column.
    pub const fn wide(name: &'static str, description: &'static str) -> Self {
        Column {
            name: Cow::Borrowed(name),
            kind: Cow::Borrowed("string"),
            format: Cow::Borrowed(""),
            priority: 1,
            description: Cow::Borrowed(description),
        }
    }
    /// A default-output integer column.
    pub const fn int(name: &'static str, description: &'static str) -> Self {
        Column {
            name: Cow::Borrowed(name),
            kind: Cow::Borrowed("integer"),
            format: Cow::Borrowed(""),
            priority: 0,
            description: Cow::Borrowed(description),
        }
    }
    /// The NAME column.
    pub const NAME: Column = Column {
        name: Cow::Borrowed("Name"),
        kind: Cow::Borrowed("string"),
        format: Cow::Borrowed("name"),
        priority: 0,
        description: Cow::Borrowed("Name must be unique within a namespace."),
    };
    /// The AGE column.
    pub const AGE: Column = Column {
        name: Cow::Borrowed("Age"),
        kind: Cow::Borrowed("string"),
        format: Cow::Borrowed(""),
        priority: 0,
        description: Cow::Borrowed(
            "CreationTimestamp is a timestamp representing the server time when this object was created.",
        ),
    };

    /// The column as a `TableColumnDefinition`.
    pub fn definition(&self) -> Value {
        json!({"name": self.name, "type": self.kind, "format": self.format, "description": self.description, "priority": self.priority})
    }
}

/// Formats a duration the way kubectl's AGE column does (`5s`, `3m20s`, `4h`, `2d3h`, `1y20d`).
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if d < 365 * 8 {
        let y = d / 365;
        if d % 365 == 0 {
            format!("{y}y")
        } else {
            format!("{y}y{}d", d % 365)
        }
    } else {
        format!("{}y", d / 365)
    }
}

/// The age of an RFC 3339 timestamp at `now`, formatted for a Table; `<unknown>` when absent.
pub fn age(timestamp: Option<&str>, now: jiff::Timestamp) -> String {
    match timestamp.and_then(|t| t.parse::<jiff::Timestamp>().ok()) {
        Some(t) => human_duration(now.as_second() - t.as_second()),
        None => "<unknown>".into(),
    }
}

/// `metadata.creationTimestamp` of a JSON object.
pub fn created(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
}

/// `metadata.name` of a JSON object ("" when absent).
pub fn name(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// A list of strings joined with commas, `<none>` when empty, as kubectl prints them.
pub fn join_or_none<I: IntoIterator<Item = String>>(items: I) -> String {
    let v: Vec<String> = items.into_iter().collect();
    if v.is_empty() {
        "<none>".into()
    } else {
        v.join(",")
    }
}

/// A label map as `k=v,k2=v2`, or `<none>`.
pub fn labels_string(map: Option<&std::collections::BTreeMap<String, String>>) -> String {
    join_or_none(map.into_iter().flatten().map(|(k, v)| format!("{k}={v}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 120), "3h2m");
        assert_eq!(human_duration(10 * 3600), "10h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_duration(400 * 86400), "400d");
        assert_eq!(human_duration(-5), "<invalid>");
    }
}
