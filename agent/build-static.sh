#!/usr/bin/env bash
# Builds the static guest agent and checks it: statically linked, and a real
# serve/exec round trip over a Unix socket. Prints the binary's path on success.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release -p agent --target x86_64-unknown-linux-gnu >&2
bin=target/x86_64-unknown-linux-gnu/release/agent
if ! file "$bin" | grep -Eq 'static(-pie)? linked|statically linked'; then
    echo "build-static: $bin is not statically linked: $(file "$bin")" >&2
    exit 1
fi
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
"$bin" serve --unix "$dir/agent.sock" >"$dir/ready" 2>"$dir/log" &
pid=$!
for _ in $(seq 100); do grep -q KILN-AGENT-READY "$dir/ready" 2>/dev/null && break; sleep 0.05; done
out=$("$bin" exec --unix "$dir/agent.sock" -- echo static-ok)
if [ "$out" != static-ok ]; then
    echo "build-static: round trip failed: $out" >&2
    cat "$dir/log" >&2
    exit 1
fi
echo "$bin"
