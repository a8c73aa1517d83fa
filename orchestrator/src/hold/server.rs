//! The owner's side of the control endpoint: one thread per connection, the cluster
//! behind a mutex, teardown when `stop` arrives.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};

use crate::cluster::{Cluster, AGENT_PORT};

/// Where the endpoint listens.
pub enum Listener {
    /// `<run>/control.sock`.
    Unix(UnixListener),
    /// A TCP port (inside the emulated host, forwarded by QEMU).
    Tcp(TcpListener),
}

/// A connection of either kind.
trait Conn: Read + Write + Send {
    fn try_clone_box(&self) -> std::io::Result<Box<dyn Conn>>;
    fn shutdown_write(&self);
}

impl Conn for UnixStream {
    fn try_clone_box(&self) -> std::io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn shutdown_write(&self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

impl Conn for std::net::TcpStream {
    fn try_clone_box(&self) -> std::io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn shutdown_write(&self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

struct NodeFiles {
    vsock: PathBuf,
    serial: PathBuf,
}

/// Serves requests until one asks to stop, then tears the cluster down.
pub fn serve(cluster: Cluster, listener: Listener) -> crate::cluster::Result<()> {
    let files: HashMap<String, NodeFiles> = cluster
        .nodes()
        .iter()
        .map(|n| {
            let p = n.paths();
            (
                n.name().to_string(),
                NodeFiles {
                    vsock: p.vsock_sock.clone(),
                    serial: p.serial_log.clone(),
                },
            )
        })
        .collect();
    let files = Arc::new(files);
    // The accept thread keeps its handle for good; on `stop` the cluster is taken out of
    // the slot and torn down here, and later requests find it gone.
    let cluster = Arc::new(Mutex::new(Some(cluster)));
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    {
        let cluster = Arc::clone(&cluster);
        std::thread::Builder::new()
            .name("kiln-control".into())
            .spawn(move || accept_loop(listener, cluster, files, stop_tx))
            .map_err(|e| crate::cluster::ClusterError::io("starting", "the control thread")(e))?;
    }
    let _ = stop_rx.recv();
    let taken = cluster.lock().unwrap_or_else(|p| p.into_inner()).take();
    match taken {
        Some(cluster) => cluster.teardown(),
        None => Ok(()),
    }
}

/// The cluster while it is held; `None` once `stop` took it.
type Slot = Mutex<Option<Cluster>>;

fn accept_loop(
    listener: Listener,
    cluster: Arc<Slot>,
    files: Arc<HashMap<String, NodeFiles>>,
    stop: mpsc::Sender<()>,
) {
    loop {
        let conn: Box<dyn Conn> = match &listener {
            Listener::Unix(l) => match l.accept() {
                Ok((s, _)) => Box::new(s),
                Err(_) => continue,
            },
            Listener::Tcp(l) => match l.accept() {
                Ok((s, _)) => Box::new(s),
                Err(_) => continue,
            },
        };
        let cluster = Arc::clone(&cluster);
        let files = Arc::clone(&files);
        let stop = stop.clone();
        std::thread::spawn(move || {
            if let Err(e) = handle(conn, &cluster, &files, &stop) {
                tracing::debug!(error = %e, "control connection ended");
            }
        });
    }
}

fn handle(
    mut conn: Box<dyn Conn>,
    cluster: &Slot,
    files: &HashMap<String, NodeFiles>,
    stop: &mpsc::Sender<()>,
) -> std::io::Result<()> {
    let line = read_line(&mut conn)?;
    let mut words = line.split_whitespace();
    let (verb, node) = (words.next().unwrap_or(""), words.next());
    let node_files = |name: Option<&str>| -> Result<&NodeFiles, String> {
        let name = name.ok_or("name a node")?;
        files.get(name).ok_or_else(|| {
            let mut known: Vec<&str> = files.keys().map(String::as_str).collect();
            known.sort();
            format!("no node {name:?}; nodes: {}", known.join(", "))
        })
    };
    match verb {
        "status" => match cluster.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            Some(c) => conn.write_all(status_json(c).to_string().as_bytes()),
            None => conn.write_all(b"ERR the cluster is stopping\n"),
        },
        "logs" => match node_files(node) {
            Ok(f) => {
                let mut log = std::fs::File::open(&f.serial)?;
                std::io::copy(&mut log, &mut conn).map(drop)
            }
            Err(e) => conn.write_all(format!("ERR {e}\n").as_bytes()),
        },
        "connect" => match node_files(node)
            .map_err(std::io::Error::other)
            .and_then(|f| connect_agent(&f.vsock))
        {
            Ok(agent) => {
                conn.write_all(b"OK\n")?;
                splice(conn, agent)
            }
            Err(e) => conn.write_all(format!("ERR {e}\n").as_bytes()),
        },
        "stop" => {
            conn.write_all(b"OK\n")?;
            let _ = stop.send(());
            Ok(())
        }
        other => conn.write_all(format!("ERR unknown request {other:?}\n").as_bytes()),
    }
}

/// One request line, read byte by byte so nothing after it is consumed.
fn read_line(conn: &mut Box<dyn Conn>) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8];
    while line.len() < 256 {
        if conn.read(&mut byte)? == 0 || byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// A stream to the node's agent through its vmm's vsock socket.
fn connect_agent(vsock: &std::path::Path) -> std::io::Result<UnixStream> {
    let mut s = UnixStream::connect(vsock)?;
    s.write_all(format!("CONNECT {AGENT_PORT}\n").as_bytes())?;
    let mut reader = BufReader::new(s.try_clone()?);
    let mut reply = String::new();
    // The reply line is short and the agent speaks only after the client: nothing else
    // is buffered past it.
    reader.read_line(&mut reply)?;
    if reply.starts_with("OK ") {
        Ok(s)
    } else {
        Err(std::io::Error::other(format!(
            "the node's vsock refused the agent port: {}",
            reply.trim()
        )))
    }
}

/// Copies both ways until either side closes.
fn splice(conn: Box<dyn Conn>, agent: UnixStream) -> std::io::Result<()> {
    let mut conn_rd = conn.try_clone_box()?;
    let mut agent_wr = agent.try_clone()?;
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut conn_rd, &mut agent_wr);
        let _ = agent_wr.shutdown(std::net::Shutdown::Write);
    });
    let mut agent_rd = agent;
    let mut conn_wr = conn;
    let _ = std::io::copy(&mut agent_rd, &mut conn_wr);
    conn_wr.shutdown_write();
    let _ = up.join();
    Ok(())
}

fn status_json(cluster: &mut Cluster) -> serde_json::Value {
    let names: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| n.name().to_string())
        .collect();
    let nodes: Vec<serde_json::Value> = names
        .iter()
        .filter_map(|name| {
            let node = cluster.node_mut(name).ok()?;
            let pid = node.pid();
            let state = if pid.is_none() {
                "stopped".to_string()
            } else {
                node.vm_state().unwrap_or_else(|_| "unknown".into())
            };
            Some(serde_json::json!({ "name": name, "pid": pid, "state": state }))
        })
        .collect();
    serde_json::json!({ "run_dir": cluster.run_dir().display().to_string(), "nodes": nodes })
}
