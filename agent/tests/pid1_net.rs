//! The static IP setup used by PID 1 mode (`kiln.ip=`), run in a private network
//! namespace so the host's network is untouched.

use std::process::Command;

#[test]
fn net_setup_sets_address_and_link_up_in_a_fresh_namespace() {
    let agent = env!("CARGO_BIN_EXE_agent");
    let script = format!(
        "{agent} net-setup --iface lo --ip 10.9.8.7/24 && ip -o -4 addr show dev lo && ip -o link show dev lo"
    );
    let out = match Command::new("unshare")
        .args(["--net", "sh", "-c", &script])
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!("cannot run unshare (util-linux) for this test: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("inet 10.9.8.7/24"), "{stdout}");
    assert!(stdout.contains("UP"), "{stdout}");
}

#[test]
fn net_setup_on_a_missing_interface_fails_clearly() {
    let agent = env!("CARGO_BIN_EXE_agent");
    let script = format!("{agent} net-setup --iface kiln-nope0 --ip 10.9.8.7/24");
    let out = Command::new("unshare")
        .args(["--net", "sh", "-c", &script])
        .output()
        .expect("unshare");
    assert_eq!(out.status.code(), Some(255));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("kiln-nope0"), "{stderr}");
}
