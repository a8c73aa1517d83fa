//! Exec round-trip latency of `true` through the agent over a Unix socket, next to a
//! NixOS-test-driver-style baseline measured in the same run: a `sh` driven over a pipe
//! pair like a serial console (send the command plus `echo MARKER`, read until MARKER).
//!
//! Run: `cargo bench -p agent --bench exec_latency` (`KILN_BENCH_RUNS=N` to change 1000).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent::{Client, ExecRequest};

const WARMUP: usize = 50;
const MARKER: &str = "__KILN_BENCH_MARKER__";

struct Stats {
    p50: Duration,
    p95: Duration,
    p99: Duration,
    mean: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let pick = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    Stats {
        p50: pick(0.50),
        p95: pick(0.95),
        p99: pick(0.99),
        mean,
    }
}

fn print(name: &str, s: &Stats) {
    println!(
        "{name:<44} p50 {:>9.1?}  p95 {:>9.1?}  p99 {:>9.1?}  mean {:>9.1?}",
        s.p50, s.p95, s.p99, s.mean
    );
}

struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(socket: &std::path::Path) -> AgentProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["serve", "--unix"])
        .arg(socket)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn agent");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    assert!(line.starts_with("KILN-AGENT-READY"), "{line}");
    AgentProcess(child)
}

async fn bench_agent(client: &Client, runs: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(runs);
    for i in 0..WARMUP + runs {
        let start = Instant::now();
        let out = client
            .exec_buffered(ExecRequest::argv(["true"]))
            .await
            .expect("exec");
        let elapsed = start.elapsed();
        assert!(out.status.success());
        if i >= WARMUP {
            samples.push(elapsed);
        }
    }
    samples
}

/// A shell on a pipe pair, used the way a serial-console test driver uses it.
fn bench_shell(command: &str, runs: usize) -> Vec<Duration> {
    let mut sh = Command::new("sh")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sh");
    let mut stdin = sh.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(sh.stdout.take().expect("stdout"));
    let line_to_send = format!("{command}; echo {MARKER} $?\n");
    let mut samples = Vec::with_capacity(runs);
    let mut line = String::new();
    for i in 0..WARMUP + runs {
        let start = Instant::now();
        stdin.write_all(line_to_send.as_bytes()).expect("write");
        stdin.flush().expect("flush");
        loop {
            line.clear();
            if stdout.read_line(&mut line).expect("read") == 0 {
                panic!("sh exited");
            }
            if line.starts_with(MARKER) {
                break;
            }
        }
        let elapsed = start.elapsed();
        assert_eq!(line.trim_end(), format!("{MARKER} 0"));
        if i >= WARMUP {
            samples.push(elapsed);
        }
    }
    drop(stdin);
    let _ = sh.wait();
    samples
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run briefly then.
    let is_bench = std::env::args().any(|a| a == "--bench");
    let runs: usize = std::env::var("KILN_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if is_bench { 1000 } else { 20 });

    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    let _agent = start_agent(&socket);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = rt.block_on(Client::connect_unix(&socket)).expect("connect");

    println!("exec round trip, {runs} runs each (after {WARMUP} warm-up runs)");
    let agent = stats(rt.block_on(bench_agent(&client, runs)));
    print("agent exec `true` (unix socket)", &agent);
    let external = stats(bench_shell("/bin/true", runs));
    print("sh over pipes: `/bin/true; echo MARKER`", &external);
    let builtin = stats(bench_shell("true", runs));
    print("sh over pipes: `true; echo MARKER` (builtin)", &builtin);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "ratio agent / sh+/bin/true: p50 {:.2}  p95 {:.2}  p99 {:.2}",
        ratio(agent.p50, external.p50),
        ratio(agent.p95, external.p95),
        ratio(agent.p99, external.p99)
    );
    println!(
        "ratio agent / sh builtin:   p50 {:.2}  p95 {:.2}  p99 {:.2}",
        ratio(agent.p50, builtin.p50),
        ratio(agent.p95, builtin.p95),
        ratio(agent.p99, builtin.p99)
    );
}
