//! Running `nft`: a script applied as one transaction (`nft -f -`), and the proxy's UDP conntrack
//! clean-up (`conntrack -D`).

use std::net::Ipv4Addr;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::Error;
use crate::rules::UdpFlow;

/// Applies `script` with `nft -f -`: the kernel takes all of it or, on any error, none of it.
pub async fn apply(script: &str) -> Result<(), Error> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::Nft(format!("running nft (is nftables installed?): {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| Error::Nft(format!("writing to nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| Error::Nft(format!("waiting for nft: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut message: String = stderr.lines().take(12).collect::<Vec<_>>().join("\n");
    if message.is_empty() {
        message = format!("exited with {}", out.status);
    }
    Err(Error::Nft(message))
}

/// Deletes the UDP conntrack entries of `flow` whose replies come from `endpoint`, so datagrams stop
/// going to an endpoint that is gone. Failures are logged: a stale entry only times out later.
pub async fn flush_udp(flow: &UdpFlow, endpoint: Ipv4Addr) {
    let ep = endpoint.to_string();
    let mut filters: Vec<Vec<String>> = Vec::new();
    if let Some((ip, port)) = flow.cluster {
        filters.push(vec![
            "--orig-dst".into(),
            ip.to_string(),
            "--orig-port-dst".into(),
            port.to_string(),
        ]);
    }
    if let Some(np) = flow.node_port {
        filters.push(vec!["--orig-port-dst".into(), np.to_string()]);
    }
    for filter in filters {
        let out = Command::new("conntrack")
            .args(["-D", "-p", "udp"])
            .args(&filter)
            .args(["--reply-src", &ep])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .await;
        match out {
            // conntrack exits 1 when nothing matched.
            Ok(o) if o.status.success() || o.status.code() == Some(1) => {}
            Ok(o) => tracing::warn!(
                "conntrack -D {}: {}",
                filter.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => tracing::warn!("running conntrack (install the conntrack package): {e}"),
        }
    }
}
