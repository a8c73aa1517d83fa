//! Client of the `vmm` control API (vmm/API.md): one JSON object per line each way.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Sends `{"op": op}` to the API socket at `path` and returns the reply's `status` object
/// (or `null` for replies without one). Errors are worded for people.
pub fn request(path: &Path, op: &str, timeout: Duration) -> Result<serde_json::Value, String> {
    call(path, &serde_json::json!({ "op": op }), timeout).map(|reply| reply["status"].clone())
}

/// Sends `request` (a JSON object with an `op`) to the API socket at `path` and returns the
/// whole reply when it says `"ok":true`. Errors are worded for people.
pub fn call(
    path: &Path,
    request: &serde_json::Value,
    timeout: Duration,
) -> Result<serde_json::Value, String> {
    let stream = UnixStream::connect(path)
        .map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("socket setup: {e}"))?;
    let mut line = request.to_string();
    line.push('\n');
    (&stream)
        .write_all(line.as_bytes())
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .map_err(|e| format!("no reply within {:.1}s: {e}", timeout.as_secs_f64()))?;
    if reply.is_empty() {
        return Err(CLOSED_WITHOUT_REPLY.into());
    }
    let value: serde_json::Value =
        serde_json::from_str(&reply).map_err(|e| format!("bad reply {reply:?}: {e}"))?;
    if value["ok"] != serde_json::Value::Bool(true) {
        let why = value["error"].as_str().unwrap_or("no reason given");
        return Err(format!("refused: {why}"));
    }
    Ok(value)
}

/// The error of a request whose connection closed before a reply came (a `vmm` that ended
/// meanwhile, e.g. right after a `power_cut`).
pub const CLOSED_WITHOUT_REPLY: &str = "the vmm closed the connection without a reply";

/// The VM state from a `status` reply (`running`, `paused`, ...).
pub fn state_of(status: &serde_json::Value) -> Option<&str> {
    status["state"].as_str()
}
