//! PID 1 mode for real: the agent is started as init of fresh PID, mount, UTS and network
//! namespaces (so its mounts, hostname, address and poweroff stay inside them), with
//! a test command line file, serving on a Unix socket instead of vsock.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};

use agent::{Client, ExecRequest};

struct Init {
    child: Child,
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
}

impl Drop for Init {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_init() -> Init {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("init.sock");
    let cmdline = dir.path().join("cmdline");
    std::fs::write(
        &cmdline,
        "console=ttyS0 kiln.hostname=kiln-pid1-test kiln.iface=lo kiln.ip=10.1.2.3/24 kiln.announce=0 quiet\n",
    )
    .unwrap();
    let mut child = Command::new("unshare")
        .args(["--pid", "--fork", "--mount", "--uts", "--net", "--"])
        .arg(env!("CARGO_BIN_EXE_agent"))
        .args(["init", "--unix"])
        .arg(&socket)
        .arg("--cmdline-file")
        .arg(&cmdline)
        .stdout(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux) is needed for this test");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("KILN-AGENT-READY"),
        "init did not come up: {line:?}"
    );
    Init {
        child,
        _dir: dir,
        socket,
    }
}

async fn sh(client: &Client, script: &str) -> (i32, String) {
    let out = client
        .exec_buffered(ExecRequest::shell(script))
        .await
        .unwrap();
    (
        out.status.shell_code(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

#[tokio::test]
async fn init_mounts_configures_reaps_and_powers_off() {
    let mut init = start_init();
    let client = Client::connect_unix(&init.socket).await.unwrap();

    assert_eq!(sh(&client, "cat /proc/1/comm").await.1, "agent");
    assert_eq!(client.hostname().await.unwrap(), "kiln-pid1-test");
    assert_eq!(sh(&client, "stat -f -c %T /run").await.1, "tmpfs");
    assert_eq!(sh(&client, "stat -f -c %T /dev").await.1, "tmpfs"); // devtmpfs reports tmpfs
    assert_eq!(sh(&client, "stat -f -c %T /sys").await.1, "sysfs");
    let (_, addr) = sh(&client, "ip -o -4 addr show dev lo").await;
    assert!(addr.contains("inet 10.1.2.3/24"), "{addr}");
    assert!(client.is_port_open(1).await.is_ok()); // /proc/net works in the namespace

    // An orphan is re-parented to PID 1 (the agent) and must be reaped by it.
    let (_, orphan) = sh(&client, "sleep 0.3 >/dev/null 2>&1 </dev/null & echo $!").await;
    assert_eq!(
        sh(&client, &format!("cut -d' ' -f4 /proc/{orphan}/stat"))
            .await
            .1,
        "1",
        "orphan not re-parented to the agent"
    );
    let reaped = common::wait_until_async(|| {
        let client = client.clone();
        let orphan = orphan.clone();
        async move { sh(&client, &format!("test -e /proc/{orphan}")).await.0 != 0 }
    })
    .await;
    assert!(reaped, "orphan {orphan} was never reaped by PID 1");

    // Poweroff: sync + reboot(RB_POWER_OFF). In a PID namespace the kernel turns that
    // into SIGINT for the namespace's init, which ends the namespace.
    client.poweroff().await.unwrap();
    let status = tokio::task::spawn_blocking(move || init.child.wait().unwrap())
        .await
        .unwrap();
    assert!(
        status.signal() == Some(libc::SIGINT) || status.code() == Some(128 + libc::SIGINT),
        "{status:?}"
    );
}
