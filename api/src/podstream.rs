//! `PodExecOptions` and `PodAttachOptions`: the query of `pods/<name>/exec` and `pods/<name>/attach`
//! (`command`, `container`, `stdin`, `stdout`, `stderr`, `tty`), and of the kubelet's
//! `/exec/<namespace>/<pod>/<container>` and `/attach/…`, where Kubernetes' kubelet names the
//! streams `input`, `output` and `error` with the value `1`. Both spellings are read; the API
//! server checks the options, then forwards them to the kubelet in the kubelet's spelling.
//! [`PortForwardOptions`] likewise: `ports` for the API server, `port` for the kubelet (SPDY clients
//! name the port per stream instead; WebSocket clients need it in the query).

use crate::error::ApiError;

/// What an exec or attach request asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamOptions {
    /// `container`: which container (None: the pod's only one).
    pub container: Option<String>,
    /// `command` (repeated): the command to run (exec only).
    pub command: Vec<String>,
    /// `stdin` (`input`): pass the client's input to the process.
    pub stdin: bool,
    /// `stdout` (`output`): return the process's output.
    pub stdout: bool,
    /// `stderr` (`error`): return the process's error output.
    pub stderr: bool,
    /// `tty`: run the process on a terminal.
    pub tty: bool,
}

/// A query flag as Kubernetes converts it: present and neither `0` nor `false` means true.
fn flag(v: &str) -> bool {
    !(v == "0" || v.eq_ignore_ascii_case("false"))
}

impl StreamOptions {
    /// Parses decoded query pairs. `command` may repeat; for the other keys the first value counts.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> StreamOptions {
        let mut o = StreamOptions::default();
        let mut seen: Vec<&'static str> = vec![];
        for (k, v) in pairs {
            let (k, v) = (k.as_ref(), v.as_ref());
            if k == "command" {
                o.command.push(v.to_string());
                continue;
            }
            let key = match k {
                "container" => "container",
                "stdin" | "input" => "stdin",
                "stdout" | "output" => "stdout",
                "stderr" | "error" => "stderr",
                "tty" => "tty",
                _ => continue,
            };
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            match key {
                "container" => o.container = Some(v.to_string()).filter(|c| !c.is_empty()),
                "stdin" => o.stdin = flag(v),
                "stdout" => o.stdout = flag(v),
                "stderr" => o.stderr = flag(v),
                _ => o.tty = flag(v),
            }
        }
        o
    }

    /// Parses a raw (percent-encoded) query string.
    pub fn from_query(query: &str) -> StreamOptions {
        StreamOptions::from_pairs(url::form_urlencoded::parse(query.as_bytes()))
    }

    /// The 400 Kubernetes answers for options an exec (`exec`: true) or attach cannot run with.
    pub fn check(&self, exec: bool) -> Result<(), ApiError> {
        if exec && self.command.is_empty() {
            return Err(ApiError::bad_request(
                "you must specify at least one command for the container",
            ));
        }
        if !(self.stdin || self.stdout || self.stderr) {
            return Err(ApiError::bad_request(
                "you must specify at least 1 of stdin, stdout, stderr",
            ));
        }
        Ok(())
    }

    /// The query for the kubelet's `/exec` or `/attach` (the container is in the path): the
    /// commands, then `error`, `input`, `output`, `tty` set to `1` where asked for.
    pub fn kubelet_query(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for c in &self.command {
            q.append_pair("command", c);
        }
        for (key, on) in [
            ("error", self.stderr),
            ("input", self.stdin),
            ("output", self.stdout),
            ("tty", self.tty),
        ] {
            if on {
                q.append_pair(key, "1");
            }
        }
        q.finish()
    }
}

/// `PodPortForwardOptions`: the ports a WebSocket port forward reaches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortForwardOptions {
    /// `ports` (API server) or `port` (kubelet), repeated or comma-separated.
    pub ports: Vec<u16>,
}

impl PortForwardOptions {
    /// Parses a raw query; a port that is not a number from 1 to 65535 is a 400.
    pub fn from_query(query: &str) -> Result<PortForwardOptions, ApiError> {
        let mut ports = vec![];
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            if k != "ports" && k != "port" {
                continue;
            }
            for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match p.parse::<u16>() {
                    Ok(n) if n > 0 => ports.push(n),
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "invalid port {p:?}: must be a number from 1 to 65535"
                        )));
                    }
                }
            }
        }
        Ok(PortForwardOptions { ports })
    }

    /// The query for the kubelet's `/portForward` (and the runtime's stream URL): `port=N` per port.
    pub fn kubelet_query(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for p in &self.ports {
            q.append_pair("port", &p.to_string());
        }
        q.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_spellings() {
        let o = StreamOptions::from_query(
            "command=sh&command=-c&command=echo%20a%26b&container=web&stdin=true&stdout=true&tty=false&stdin=false",
        );
        assert_eq!(o.command, ["sh", "-c", "echo a&b"]);
        assert_eq!(o.container.as_deref(), Some("web"));
        assert!(o.stdin && o.stdout && !o.stderr && !o.tty);
        let k = StreamOptions::from_query(&o.kubelet_query());
        assert_eq!(
            StreamOptions {
                container: None,
                ..o.clone()
            },
            k
        );
        assert_eq!(
            o.kubelet_query(),
            "command=sh&command=-c&command=echo+a%26b&input=1&output=1"
        );
        let k = StreamOptions::from_query("input=1&output=0&error=1&tty=1");
        assert!(k.stdin && !k.stdout && k.stderr && k.tty);
    }

    #[test]
    fn reads_and_writes_ports() {
        let o = PortForwardOptions::from_query("ports=80,8080&ports=9000").unwrap();
        assert_eq!(o.ports, [80, 8080, 9000]);
        assert_eq!(o.kubelet_query(), "port=80&port=8080&port=9000");
        assert_eq!(
            PortForwardOptions::from_query(&o.kubelet_query()).unwrap(),
            o
        );
        assert!(PortForwardOptions::from_query("").unwrap().ports.is_empty());
        for bad in ["ports=0", "ports=http", "ports=70000"] {
            assert_eq!(PortForwardOptions::from_query(bad).unwrap_err().code, 400);
        }
    }

    #[test]
    fn checks_like_kubernetes() {
        let none = StreamOptions::default();
        assert_eq!(
            none.check(true).unwrap_err().message,
            "you must specify at least one command for the container"
        );
        assert_eq!(
            none.check(false).unwrap_err().message,
            "you must specify at least 1 of stdin, stdout, stderr"
        );
        let ok = StreamOptions::from_query("command=ls&stdout=true");
        assert!(ok.check(true).is_ok());
        assert!(StreamOptions::from_query("stderr=1").check(false).is_ok());
    }
}
