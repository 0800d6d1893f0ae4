//! Content negotiation: what representation a client accepts, decoding request bodies, and
//! building responses (including `Status` errors).

use atoll_api::ApiError;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;

/// Largest request body accepted (as Kubernetes: 3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// A representation of responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// Plain JSON objects and lists.
    Json,
    /// YAML.
    Yaml,
    /// `meta.k8s.io` Table, with the apiVersion the client asked for.
    Table(&'static str),
    /// `meta.k8s.io/v1` PartialObjectMetadata(List).
    Metadata,
}

struct MediaRange<'a> {
    essence: &'a str,
    params: Vec<(&'a str, &'a str)>,
}

impl MediaRange<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

fn media_ranges(accept: &str) -> Vec<MediaRange<'_>> {
    accept
        .split(',')
        .map(|r| {
            let mut it = r.split(';');
            let essence = it.next().unwrap_or("").trim();
            let params = it
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
                .collect();
            MediaRange { essence, params }
        })
        .collect()
}

/// The `Accept` header as a string ("" when absent).
pub fn accept(headers: &HeaderMap) -> &str {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Picks the representation for an object or list response.
pub fn format(accept: &str) -> Result<Format, ApiError> {
    if accept.trim().is_empty() {
        return Ok(Format::Json);
    }
    for r in media_ranges(accept) {
        let json = matches!(r.essence, "application/json" | "*/*" | "application/*");
        match (json, r.param("as"), r.param("g"), r.param("v")) {
            (true, Some("Table"), Some("meta.k8s.io"), Some("v1")) => {
                return Ok(Format::Table("meta.k8s.io/v1"));
            }
            (true, Some("Table"), Some("meta.k8s.io"), Some("v1beta1")) => {
                return Ok(Format::Table("meta.k8s.io/v1beta1"));
            }
            (
                true,
                Some("PartialObjectMetadata" | "PartialObjectMetadataList"),
                Some("meta.k8s.io"),
                Some("v1"),
            ) => {
                return Ok(Format::Metadata);
            }
            (true, None, _, _) => return Ok(Format::Json),
            _ => {}
        }
        if matches!(
            r.essence,
            "application/yaml" | "application/x-yaml" | "text/yaml"
        ) && r.param("as").is_none()
        {
            return Ok(Format::Yaml);
        }
    }
    Err(ApiError::not_acceptable(format!(
        "only the following media types are accepted: application/json, application/yaml, application/json;as=Table;v=v1;g=meta.k8s.io (asked for {accept:?})"
    )))
}

/// Decodes a request body (JSON or YAML) into JSON.
pub fn decode_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(too_large());
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    match essence {
        "application/json" | "" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body of the request could not be decoded as JSON: {e}"
            ))
        }),
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("the YAML body is not valid UTF-8"))?;
            serde_saphyr::from_str::<Value>(text).map_err(|e| {
                ApiError::bad_request(format!(
                    "the body of the request could not be decoded as YAML: {e}"
                ))
            })
        }
        "application/vnd.kubernetes.protobuf" => Err(ApiError::unsupported_media_type(
            "protobuf request bodies (application/vnd.kubernetes.protobuf) are not served yet: send application/json",
        )),
        other => Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {other:?})"
        ))),
    }
}

/// The 413 for a body over [`MAX_BODY_BYTES`].
pub fn too_large() -> ApiError {
    ApiError::too_large(format!(
        "Request entity too large: limit is {MAX_BODY_BYTES}"
    ))
}

/// A response with a JSON (or YAML) body.
pub fn respond(code: u16, value: &Value, format: &Format) -> Response {
    let (bytes, content_type) = match format {
        Format::Yaml => match serde_saphyr::to_string(value) {
            Ok(s) => (Bytes::from(s), "application/yaml"),
            Err(e) => return error(&ApiError::internal(format!("encoding YAML: {e}"))),
        },
        _ => (
            Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
            "application/json",
        ),
    };
    raw(code, bytes, content_type)
}

/// A response with bytes already encoded.
pub fn raw(code: u16, body: Bytes, content_type: &str) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// Adds a `Warning: 299 - "<text>"` header per warning, as Kubernetes sends them.
pub fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - {}", serde_json::to_string(w).unwrap_or_default());
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

/// The `Status` response for an error.
pub fn error(err: &ApiError) -> Response {
    let mut resp = respond(err.code, &err.to_status(), &Format::Json);
    if let Some(secs) = err.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_tables_and_json() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(format(kubectl).unwrap(), Format::Table("meta.k8s.io/v1"));
        assert_eq!(format("").unwrap(), Format::Json);
        assert_eq!(
            format("application/vnd.kubernetes.protobuf,application/json").unwrap(),
            Format::Json
        );
        assert_eq!(format("application/yaml").unwrap(), Format::Yaml);
        assert!(format("application/vnd.kubernetes.protobuf").is_err());
        assert!(format("text/html").is_err());
    }

    #[test]
    fn decodes_bodies() {
        let mut h = HeaderMap::new();
        assert_eq!(
            decode_body(&h, &Bytes::from_static(b"{\"a\":1}")).unwrap()["a"],
            1
        );
        assert_eq!(
            decode_body(&h, &Bytes::from_static(b"{bad"))
                .unwrap_err()
                .code,
            400
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/yaml"),
        );
        assert_eq!(
            decode_body(&h, &Bytes::from_static(b"a: 1\nb: [x]\n")).unwrap()["b"][0],
            "x"
        );
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(
            decode_body(&h, &Bytes::from_static(b"{}"))
                .unwrap_err()
                .code,
            415
        );
        h.remove(header::CONTENT_TYPE);
        assert_eq!(
            decode_body(&h, &Bytes::from(vec![b' '; MAX_BODY_BYTES + 1]))
                .unwrap_err()
                .code,
            413
        );
    }
}
