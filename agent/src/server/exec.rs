//! Exec requests: spawn in a new process group, stream stdin/stdout/stderr, enforce the
//! timeout by killing the whole group, report the exit code or signal.

use std::collections::HashSet;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command as TokioCommand};
use tokio::sync::mpsc;

use super::connection::Outbox;
use crate::protocol::{
    ClientMsg, Command, ErrorKind, ExecRequest, ExitStatus, ServerMsg, CHUNK_LEN,
};

/// How long output may stay open after the group was killed.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Pids of children spawned by exec requests and not yet reaped by their task. The PID 1
/// zombie reaper must not reap these (their task needs the exit status); spawning and
/// registering happen under this lock so the reaper never sees an unregistered child.
pub static EXEC_CHILDREN: Mutex<Option<HashSet<u32>>> = Mutex::new(None);

/// Runs one exec request to completion.
pub(crate) async fn run(req: ExecRequest, inbox: mpsc::Receiver<ClientMsg>, out: Outbox) {
    let mut child = match spawn(&req) {
        Ok(child) => child,
        Err((kind, message)) => {
            out.error(kind, message).await;
            return;
        }
    };
    let Some(pid) = child.id() else {
        out.error(ErrorKind::Io, "child exited before its pid was known")
            .await;
        return;
    };
    out.send(ServerMsg::Started { pid }).await;
    let pgid = pid as i32;

    let stdin = child.stdin.take();
    let stdin_task = tokio::spawn(forward_stdin(stdin, inbox, pgid));
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();

    let pumps = async {
        tokio::join!(
            pump(stdout, &out, ServerMsg::Stdout),
            pump(stderr, &out, ServerMsg::Stderr)
        );
    };
    tokio::pin!(pumps);

    let timeout = req.timeout_ms.map(Duration::from_millis);
    let deadline = tokio::time::sleep(timeout.unwrap_or(Duration::MAX));
    tokio::pin!(deadline);
    // After a kill, output still held open by an escaped process (setsid) is abandoned.
    let grace = tokio::time::sleep(Duration::MAX);
    tokio::pin!(grace);
    let mut timed_out = false;
    let mut killed = false;
    loop {
        tokio::select! {
            _ = &mut pumps => break,
            _ = &mut deadline, if timeout.is_some() && !timed_out => {
                tracing::info!(pid, "exec timed out, killing its process group");
                timed_out = true;
            }
            _ = out.closed(), if !killed => {
                tracing::info!(pid, "client gone, killing its process group");
            }
            _ = &mut grace, if killed => {
                tracing::warn!(pid, "output still open after the kill, abandoning it");
                break;
            }
        }
        if !killed {
            kill_group(pgid);
            killed = true;
            grace
                .as_mut()
                .reset(tokio::time::Instant::now() + KILL_GRACE);
        }
    }
    let status = child.wait().await;
    stdin_task.abort();
    unregister(pid);

    let msg = match status {
        Ok(st) => ServerMsg::Exited {
            status: match (st.code(), st.signal()) {
                (Some(code), _) => ExitStatus::Code(code),
                (None, Some(sig)) => ExitStatus::Signal(sig),
                (None, None) => ExitStatus::Code(-1),
            },
            timed_out,
        },
        Err(e) => ServerMsg::Error {
            kind: ErrorKind::Io,
            message: format!("waiting for pid {pid}: {e}"),
        },
    };
    out.send(msg).await;
}

fn spawn(req: &ExecRequest) -> Result<Child, (ErrorKind, String)> {
    let mut cmd = match &req.command {
        Command::Argv(argv) => {
            let Some((prog, args)) = argv.split_first() else {
                return Err((ErrorKind::InvalidRequest, "empty argv".into()));
            };
            let mut cmd = TokioCommand::new(prog);
            cmd.args(args);
            cmd
        }
        Command::Shell(script) => {
            let mut cmd = TokioCommand::new("/bin/sh");
            cmd.arg("-c").arg(script);
            cmd
        }
    };
    if req.clear_env {
        cmd.env_clear();
    }
    cmd.envs(req.env.iter().map(|(k, v)| (k, v)));
    if let Some(cwd) = &req.cwd {
        cmd.current_dir(cwd);
    }
    cmd.stdin(if req.stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    // Own process group, so the timeout can kill grandchildren too.
    .process_group(0)
    .kill_on_drop(false);

    let mut registry = EXEC_CHILDREN.lock().unwrap_or_else(|p| p.into_inner());
    let child = cmd.spawn().map_err(|e| {
        let kind = match e.kind() {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            _ => ErrorKind::Io,
        };
        (
            kind,
            format!("cannot start {}: {e}", describe(&req.command)),
        )
    })?;
    if let Some(pid) = child.id() {
        registry.get_or_insert_with(HashSet::new).insert(pid);
    }
    Ok(child)
}

fn describe(command: &Command) -> String {
    match command {
        Command::Argv(argv) => format!("{:?}", argv.first().map(String::as_str).unwrap_or("")),
        Command::Shell(_) => "/bin/sh".to_string(),
    }
}

fn unregister(pid: u32) {
    let mut registry = EXEC_CHILDREN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(set) = registry.as_mut() {
        set.remove(&pid);
    }
}

fn kill_group(pgid: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    let rc = unsafe { libc::kill(-pgid, libc::SIGKILL) };
    if rc != 0 {
        tracing::debug!(pgid, error = %io::Error::last_os_error(), "killpg failed");
    }
}

/// Copies a pipe to the client in chunks until EOF or until the client is gone.
async fn pump<R: AsyncRead + Unpin>(pipe: Option<R>, out: &Outbox, wrap: fn(Vec<u8>) -> ServerMsg) {
    let Some(mut pipe) = pipe else { return };
    let mut buf = vec![0u8; CHUNK_LEN];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                if !out.send(wrap(buf[..n].to_vec())).await {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "reading child output");
                return;
            }
        }
    }
}

/// Feeds client stdin chunks to the child; also handles `Kill`.
async fn forward_stdin(
    mut stdin: Option<ChildStdin>,
    mut inbox: mpsc::Receiver<ClientMsg>,
    pgid: i32,
) {
    while let Some(msg) = inbox.recv().await {
        match msg {
            ClientMsg::Stdin(data) => {
                if let Some(pipe) = stdin.as_mut() {
                    if pipe.write_all(&data).await.is_err() {
                        // The child closed its stdin; further input is discarded.
                        stdin = None;
                    }
                }
            }
            ClientMsg::StdinEof => stdin = None,
            ClientMsg::Kill => kill_group(pgid),
            other => tracing::debug!(?other, "unexpected message for an exec, ignored"),
        }
    }
}
