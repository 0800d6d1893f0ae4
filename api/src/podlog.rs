//! `PodLogOptions`: the query parameters of `GET pods/<name>/log` and of the kubelet's
//! `/containerLogs/<namespace>/<pod>/<container>`, parsed, validated and written back as
//! Kubernetes' parameter codec does (the API server checks them, then forwards them to the kubelet).

use crate::error::{ApiError, Cause};

/// What a log request asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// `container`: which container (None: the pod's only one).
    pub container: Option<String>,
    /// `follow`: keep streaming new output while the container runs.
    pub follow: bool,
    /// `previous`: the container's previous instance (the one before its last restart).
    pub previous: bool,
    /// `timestamps`: prefix every line with its RFC 3339 time.
    pub timestamps: bool,
    /// `sinceSeconds`: only lines newer than this many seconds.
    pub since_seconds: Option<i64>,
    /// `sinceTime`: only lines at or after this time.
    pub since_time: Option<jiff::Timestamp>,
    /// `tailLines`: only the last this many lines.
    pub tail_lines: Option<i64>,
    /// `limitBytes`: stop after this many bytes.
    pub limit_bytes: Option<i64>,
}

/// A query flag as Kubernetes converts it: present and neither `0` nor `false` means true.
fn flag(v: &str) -> bool {
    !(v == "0" || v.eq_ignore_ascii_case("false"))
}

fn int(name: &str, v: &str) -> Result<Option<i64>, ApiError> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse::<i64>().map(Some).map_err(|_| {
        ApiError::bad_request(format!(
            "invalid value {v:?} for query parameter {name}: not an integer"
        ))
    })
}

/// `Invalid value: <n>: <why>` with the number unquoted, as Kubernetes prints integers.
fn invalid_int(field: &str, value: i64, why: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        message: format!("Invalid value: {value}: {why}"),
        field: field.into(),
    }
}

impl LogOptions {
    /// Parses decoded query pairs. The first value of a repeated key counts; unknown keys are ignored.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<LogOptions, ApiError> {
        let mut o = LogOptions::default();
        let mut seen: Vec<String> = vec![];
        for (k, v) in pairs {
            let (k, v) = (k.as_ref(), v.as_ref());
            if seen.iter().any(|s| s == k) {
                continue;
            }
            seen.push(k.to_string());
            match k {
                "container" => o.container = Some(v.to_string()).filter(|c| !c.is_empty()),
                "follow" => o.follow = flag(v),
                "previous" => o.previous = flag(v),
                "timestamps" => o.timestamps = flag(v),
                "sinceSeconds" => o.since_seconds = int(k, v)?,
                "tailLines" => o.tail_lines = int(k, v)?,
                "limitBytes" => o.limit_bytes = int(k, v)?,
                "sinceTime" if v.is_empty() => {}
                "sinceTime" => {
                    o.since_time = Some(v.parse::<jiff::Timestamp>().map_err(|e| {
                        ApiError::bad_request(format!(
                            "invalid value {v:?} for query parameter sinceTime: not an RFC 3339 time: {e}"
                        ))
                    })?)
                }
                _ => {}
            }
        }
        Ok(o)
    }

    /// The problems Kubernetes reports for these options (none: valid).
    pub fn validate(&self) -> Vec<Cause> {
        let mut causes = vec![];
        if let Some(n) = self.tail_lines.filter(|n| *n < 0) {
            causes.push(invalid_int(
                "tailLines",
                n,
                "must be greater than or equal to 0",
            ));
        }
        if let Some(n) = self.limit_bytes.filter(|n| *n < 1) {
            causes.push(invalid_int("limitBytes", n, "must be greater than 0"));
        }
        match (self.since_seconds, self.since_time) {
            (Some(_), Some(_)) => causes.push(Cause::forbidden(
                "",
                "at most one of `sinceTime` or `sinceSeconds` may be specified",
            )),
            (Some(n), None) if n < 1 => {
                causes.push(invalid_int("sinceSeconds", n, "must be greater than 0"))
            }
            _ => {}
        }
        causes
    }

    /// The query string for the kubelet's `/containerLogs` (sorted by key, as Go encodes it; the
    /// container is in the path). `sinceTime` is sent in seconds, in UTC.
    pub fn kubelet_query(&self) -> String {
        let mut q: Vec<(&str, String)> = vec![];
        if self.follow {
            q.push(("follow", "true".into()));
        }
        if let Some(n) = self.limit_bytes {
            q.push(("limitBytes", n.to_string()));
        }
        if self.previous {
            q.push(("previous", "true".into()));
        }
        if let Some(n) = self.since_seconds {
            q.push(("sinceSeconds", n.to_string()));
        }
        if let Some(t) = self.since_time {
            let whole = jiff::Timestamp::from_second(t.as_second()).unwrap_or(t);
            q.push(("sinceTime", whole.to_string()));
        }
        if let Some(n) = self.tail_lines {
            q.push(("tailLines", n.to_string()));
        }
        if self.timestamps {
            q.push(("timestamps", "true".into()));
        }
        q.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &[(&str, &str)]) -> Result<LogOptions, ApiError> {
        LogOptions::from_pairs(q.iter().copied())
    }

    #[test]
    fn parses_flags_as_kubernetes_converts_them() {
        let o = parse(&[
            ("container", "web"),
            ("follow", "true"),
            ("previous", "1"),
            ("timestamps", ""),
            ("tailLines", "2"),
            ("limitBytes", "10"),
            ("sinceSeconds", "5"),
            ("follow", "false"),
        ])
        .unwrap();
        assert_eq!(o.container.as_deref(), Some("web"));
        assert!(o.follow && o.previous && o.timestamps);
        assert_eq!(
            (o.tail_lines, o.limit_bytes, o.since_seconds),
            (Some(2), Some(10), Some(5))
        );
        let o = parse(&[("follow", "False"), ("previous", "0"), ("tailLines", "")]).unwrap();
        assert!(!o.follow && !o.previous && o.tail_lines.is_none());
        assert_eq!(parse(&[("tailLines", "x")]).unwrap_err().code, 400);
        assert_eq!(parse(&[("sinceTime", "yesterday")]).unwrap_err().code, 400);
    }

    #[test]
    fn validates_like_kubernetes() {
        let o = parse(&[
            ("tailLines", "-1"),
            ("limitBytes", "0"),
            ("sinceSeconds", "0"),
        ])
        .unwrap();
        let msgs: Vec<String> = o
            .validate()
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(
            msgs,
            [
                "tailLines: Invalid value: -1: must be greater than or equal to 0",
                "limitBytes: Invalid value: 0: must be greater than 0",
                "sinceSeconds: Invalid value: 0: must be greater than 0",
            ]
        );
        let both = parse(&[("sinceSeconds", "5"), ("sinceTime", "2024-01-02T03:04:05Z")]).unwrap();
        assert_eq!(both.validate().len(), 1);
        assert!(parse(&[("tailLines", "0")]).unwrap().validate().is_empty());
    }

    #[test]
    fn writes_the_kubelet_query_sorted() {
        let o = parse(&[
            ("timestamps", "true"),
            ("tailLines", "2"),
            ("follow", "true"),
            ("sinceTime", "2024-01-02T05:04:05.25+02:00"),
            ("limitBytes", "7"),
            ("previous", "true"),
        ])
        .unwrap();
        assert_eq!(
            o.kubelet_query(),
            "follow=true&limitBytes=7&previous=true&sinceTime=2024-01-02T03:04:05Z&tailLines=2&timestamps=true"
        );
        assert_eq!(LogOptions::default().kubelet_query(), "");
    }
}
