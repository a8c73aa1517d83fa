//! Framing: a 4-byte big-endian length prefix followed by a postcard-encoded message.
//!
//! [`FrameCodec`] enforces [`MAX_FRAME_LEN`] in both directions, rejects trailing bytes
//! after a message, and turns any malformed frame into a [`FrameError`].

use std::io;
use std::marker::PhantomData;

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use crate::protocol::{ClientFrame, MAX_FRAME_LEN};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Socket error, or a length prefix above the maximum frame size.
    #[error("frame i/o: {0}")]
    Io(#[from] io::Error),
    /// The frame body is not a valid message (unknown message type, bad field, truncated).
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A message would encode to more than the maximum frame size.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Encoded size.
        len: usize,
        /// The maximum.
        max: usize,
    },
}

/// Encodes `Out` messages and decodes `In` messages, one per length-delimited frame.
pub struct FrameCodec<In, Out> {
    inner: LengthDelimitedCodec,
    /// Part of a frame has been consumed (the inner codec may hold a parsed header).
    in_frame: bool,
    _types: PhantomData<fn(Out) -> In>,
}

impl<In, Out> Default for FrameCodec<In, Out> {
    fn default() -> Self {
        Self::new()
    }
}

impl<In, Out> FrameCodec<In, Out> {
    /// A codec with the protocol's maximum frame length.
    pub fn new() -> Self {
        let inner = LengthDelimitedCodec::builder()
            .length_field_length(4)
            .max_frame_length(MAX_FRAME_LEN)
            .new_codec();
        FrameCodec {
            inner,
            in_frame: false,
            _types: PhantomData,
        }
    }
}

/// Decodes one message body (the bytes after the length prefix).
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let (msg, rest) =
        postcard::take_from_bytes(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes after the message",
            rest.len()
        )));
    }
    Ok(msg)
}

/// Encodes one message body (without the length prefix).
pub fn encode_body<T: Serialize>(msg: &T) -> Result<Bytes, FrameError> {
    let body = postcard::to_stdvec(msg).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if body.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len: body.len(),
            max: MAX_FRAME_LEN,
        });
    }
    Ok(Bytes::from(body))
}

impl<In: DeserializeOwned, Out> Decoder for FrameCodec<In, Out> {
    type Item = In;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, FrameError> {
        let had_bytes = !src.is_empty();
        match self.inner.decode(src)? {
            Some(body) => {
                self.in_frame = false;
                decode_body(&body).map(Some)
            }
            None => {
                self.in_frame |= had_bytes;
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<In>, FrameError> {
        match self.decode(src)? {
            Some(msg) => Ok(Some(msg)),
            None if src.is_empty() && !self.in_frame => Ok(None),
            None => Err(FrameError::Malformed(format!(
                "connection closed inside a frame ({} bytes pending)",
                src.len()
            ))),
        }
    }
}

impl<In, Out: Serialize> Encoder<Out> for FrameCodec<In, Out> {
    type Error = FrameError;

    fn encode(&mut self, item: Out, dst: &mut BytesMut) -> Result<(), FrameError> {
        let body = encode_body(&item)?;
        self.inner.encode(body, dst)?;
        Ok(())
    }
}

/// Runs the agent's decoder over a byte stream as if it arrived on a connection, and
/// returns the frames decoded before the end or the first error. Used by the fuzzer and
/// the seed tests; it must never panic, whatever the input.
pub fn decode_client_stream(data: &[u8]) -> (Vec<ClientFrame>, Option<FrameError>) {
    let mut codec = FrameCodec::<ClientFrame, ()>::new();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    // Feed in uneven pieces to exercise partial-frame handling.
    for piece in data.chunks(7) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e)),
        }
    }
}
