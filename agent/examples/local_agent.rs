//! Runs an agent in-process on a temporary Unix socket and drives it with the client:
//! `cargo run -p agent --example local_agent`.

use std::time::Duration;

use agent::client::ExecEvent;
use agent::server::{serve_unix, PowerAction, ServerOptions};
use agent::{Client, ExecRequest};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("agent.sock");
    let server_socket = socket.clone();
    tokio::spawn(async move {
        let options = ServerOptions {
            power: PowerAction::Exit,
        };
        if let Err(e) = serve_unix(&server_socket, options).await {
            eprintln!("agent stopped: {e}");
        }
    });
    // The listener is bound before the ready line is printed; wait for the socket.
    while !socket.exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let client = Client::connect_unix(&socket).await?;
    println!("connected to agent {:?}", client.server_info());

    // Buffered: everything at once.
    let out = client
        .exec_buffered(ExecRequest::shell("echo hello; echo oops >&2; exit 3"))
        .await?;
    println!(
        "stdout={:?} stderr={:?} status={:?}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status
    );

    // Streaming, with stdin.
    let mut exec = client
        .exec(ExecRequest::argv(["tr", "a-z", "A-Z"]).with_stdin())
        .await?;
    let mut stdin = exec.take_stdin().expect("stdin requested");
    stdin.write(b"streamed through the agent\n").await?;
    stdin.close().await?;
    while let Some(event) = exec.next_event().await? {
        match event {
            ExecEvent::Stdout(d) => print!("{}", String::from_utf8_lossy(&d)),
            ExecEvent::Stderr(d) => eprint!("{}", String::from_utf8_lossy(&d)),
            ExecEvent::Exited { status, .. } => println!("exited: {status:?}"),
        }
    }

    // Files and probes.
    let path = dir.path().join("greeting.txt");
    let path = path.to_str().expect("utf-8 path");
    client.put_bytes(b"hi from the host\n", path, 0o644).await?;
    println!(
        "get: {:?}",
        String::from_utf8(client.get_bytes(path).await?)?
    );
    println!("exists: {}", client.file_exists(path).await?);
    println!("uptime: {:?}", client.uptime().await?);
    Ok(())
}
