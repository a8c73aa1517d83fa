//! Fuzzes the agent's frame decoder (length prefix + postcard body) on arbitrary byte
//! streams, and the client's decoder of agent frames on arbitrary bodies.
#![no_main]

use agent::codec::{decode_body, decode_client_stream};
use agent::protocol::ServerFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_client_stream(data);
    let _ = decode_body::<ServerFrame>(data);
});
