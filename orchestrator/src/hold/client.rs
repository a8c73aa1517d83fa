//! The other terminal's side: `status`, `logs`, `exec` and `stop` against a held cluster.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::HeldState;

/// Sends one request line and returns everything the owner answers.
pub fn request(state: &HeldState, line: &str) -> Result<Vec<u8>, String> {
    let fail = |e: std::io::Error| format!("control endpoint {}: {e}", state.control);
    let mut answer = Vec::new();
    if let Some(path) = state.control.strip_prefix("unix:") {
        let mut s = std::os::unix::net::UnixStream::connect(path).map_err(fail)?;
        s.write_all(format!("{line}\n").as_bytes()).map_err(fail)?;
        s.read_to_end(&mut answer).map_err(fail)?;
    } else if let Some(addr) = state.control.strip_prefix("tcp:") {
        let mut s = std::net::TcpStream::connect(addr).map_err(fail)?;
        s.write_all(format!("{line}\n").as_bytes()).map_err(fail)?;
        s.read_to_end(&mut answer).map_err(fail)?;
    } else {
        return Err(format!("unknown control endpoint {:?}", state.control));
    }
    if let Some(err) = answer.strip_prefix(b"ERR ") {
        return Err(String::from_utf8_lossy(err).trim().to_string());
    }
    Ok(answer)
}

/// The owner's status object.
pub fn status(state: &HeldState) -> Result<serde_json::Value, String> {
    let answer = request(state, "status")?;
    serde_json::from_slice(&answer).map_err(|e| format!("bad status answer: {e}"))
}

/// The serial log of `node`: from the owner while it runs, else from the run directory.
pub fn logs(run_dir: &Path, node: &str) -> Result<Vec<u8>, String> {
    if let Ok(state) = HeldState::read(run_dir) {
        if state.owner_alive() {
            return request(&state, &format!("logs {node}"));
        }
    }
    let path = run_dir.join(node).join("serial.log");
    std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// An agent client for `node`, through the owner.
pub async fn agent(state: &HeldState, node: &str) -> Result<agent::Client, String> {
    let fail = |e: std::io::Error| format!("control endpoint {}: {e}", state.control);
    let request = format!("connect {node}\n");
    if let Some(path) = state.control.strip_prefix("unix:") {
        let mut s = tokio::net::UnixStream::connect(path).await.map_err(fail)?;
        s.write_all(request.as_bytes()).await.map_err(fail)?;
        expect_ok(&mut s).await?;
        agent::Client::over(s).await.map_err(|e| e.to_string())
    } else if let Some(addr) = state.control.strip_prefix("tcp:") {
        let mut s = tokio::net::TcpStream::connect(addr).await.map_err(fail)?;
        s.write_all(request.as_bytes()).await.map_err(fail)?;
        expect_ok(&mut s).await?;
        agent::Client::over(s).await.map_err(|e| e.to_string())
    } else {
        Err(format!("unknown control endpoint {:?}", state.control))
    }
}

/// Reads the answer line of `connect`: `OK` or `ERR why`.
async fn expect_ok<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Result<(), String> {
    let mut line = Vec::new();
    loop {
        let b = s
            .read_u8()
            .await
            .map_err(|e| format!("the owner closed: {e}"))?;
        if b == b'\n' || line.len() > 4096 {
            break;
        }
        line.push(b);
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    match line.strip_prefix("ERR ") {
        Some(why) => Err(why.to_string()),
        None if line == "OK" => Ok(()),
        None => Err(format!("unexpected answer {line:?}")),
    }
}

/// Asks the owner to tear down and waits (up to `timeout`) until it is gone.
pub fn stop(state: &HeldState, timeout: Duration) -> Result<(), String> {
    request(state, "stop")?;
    let deadline = Instant::now() + timeout;
    while state.owner_alive() {
        if Instant::now() > deadline {
            return Err(format!(
                "the owner (pid {}) did not exit within {} s",
                state.pid,
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}
