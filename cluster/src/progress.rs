//! What `atoll up` shows while the cluster starts. The supervisor prints its steps to its standard
//! output (`<logs>/up.log`), ending with a sentinel line; the `atoll up` the user ran follows that
//! file ([`follow`]) and returns when the sentinel says ready or failed.

use std::io::{BufRead, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

/// The sentinel after which the cluster is up.
const READY: &str = "-- atoll up: ready";
/// The sentinel after which the supervisor gave up.
const FAILED: &str = "-- atoll up: failed";

/// Prints a step (`==> starting etcd`).
pub fn step(message: &str) {
    println!("==> {message}");
    let _ = std::io::stdout().flush();
}

/// Prints a remark (a restart, a warning).
pub fn note(message: &str) {
    println!("    {message}");
    let _ = std::io::stdout().flush();
}

/// Says the cluster is up.
pub fn ready() {
    println!("{READY}");
    let _ = std::io::stdout().flush();
}

/// Says the start failed, with why.
pub fn failed(why: &str) {
    println!("up: {why}");
    println!("{FAILED}");
    let _ = std::io::stdout().flush();
}

/// Prints what the supervisor writes to `log` from byte `from` until its sentinel; `alive` says
/// whether the supervisor still runs. Ok when it reported ready; Err with a reason otherwise.
pub fn follow(log: &Path, from: u64, alive: impl Fn() -> bool) -> Result<(), String> {
    let mut file = loop {
        match std::fs::File::open(log) {
            Ok(f) => break f,
            Err(_) if alive() => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("{}: {e}", log.display())),
        }
    };
    file.seek(SeekFrom::Start(from))
        .map_err(|e| e.to_string())?;
    let mut reader = std::io::BufReader::new(file);
    let mut line = String::new();
    let mut out = std::io::stdout();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(|e| e.to_string())?;
        if n == 0 || !line.ends_with('\n') {
            if n == 0 && !alive() {
                return Err(format!(
                    "the supervisor exited before the cluster was up (log: {})",
                    log.display()
                ));
            }
            // A partial line: wait for the rest.
            std::thread::sleep(Duration::from_millis(100));
            if n > 0 {
                let pos = reader.stream_position().map_err(|e| e.to_string())?;
                reader
                    .seek(SeekFrom::Start(pos - n as u64))
                    .map_err(|e| e.to_string())?;
            }
            continue;
        }
        match line.trim_end() {
            READY => return Ok(()),
            FAILED => return Err("the cluster did not start".into()),
            text => {
                let _ = writeln!(out, "{text}");
            }
        }
    }
}
