//! Length-prefixed MessagePack frames: a 4-byte big-endian body length, then the body as
//! MessagePack (`rmp_serde::to_vec_named`).
//!
//! Everything a peer sends is bounded before it costs memory: the announced length is checked
//! against the caller's `max_len` before any buffer is allocated, and the body buffer grows with
//! the bytes that actually arrive (never past the announced length), so a peer that announces
//! 64 MiB and sends ten bytes holds ten bytes of ours, not 64 MiB. Bodies are decoded from the
//! buffer with `rmp_serde::from_slice`, whose binary and string reads are checked against the
//! bytes present, and whose nesting depth is limited, so a hostile body cannot make the decoder
//! allocate more than the body's size or overflow the stack.
//!
//! A frame body is decoded as one MessagePack value; bytes after that value inside the same
//! body are ignored (as `rmp_serde::from_slice` does).

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Size of the length prefix in bytes.
pub const HEADER_LEN: usize = 4;

/// Largest encoded image a node accepts: 64 MiB.
pub const MAX_IMAGE_BYTES: usize = 64 * 1024 * 1024;

/// Default largest frame body: the largest image plus 64 KiB for the other fields.
pub const DEFAULT_MAX_FRAME: usize = MAX_IMAGE_BYTES + 64 * 1024;

/// First size the body buffer gets; it then doubles up to the announced length.
const INITIAL_CHUNK: usize = 64 * 1024;

/// Why a frame could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame body is longer than the limit (announced by the peer, or produced by encoding).
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Length of the body in bytes.
        len: u64,
        /// The limit in force.
        max: usize,
    },
    /// The stream ended cleanly before the first byte of a frame.
    #[error("stream closed before a frame started")]
    Closed,
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame: expected {expected} bytes, got {received}")]
    Truncated {
        /// Bytes the header or body needed.
        expected: usize,
        /// Bytes that arrived before the end of the stream.
        received: usize,
    },
    /// A buffer given to [`decode`] holds bytes after the frame.
    #[error("{extra} bytes after the end of the frame")]
    TrailingBytes {
        /// How many bytes follow the frame.
        extra: usize,
    },
    /// The body is not valid MessagePack for the expected type.
    #[error("cannot decode frame body")]
    Decode(#[source] rmp_serde::decode::Error),
    /// The value could not be encoded as MessagePack.
    #[error("cannot encode frame body")]
    Encode(#[source] rmp_serde::encode::Error),
    /// The stream failed.
    #[error("i/o error on the stream")]
    Io(#[from] std::io::Error),
}

/// Encodes `value` as a whole frame: length prefix and body.
///
/// # Errors
///
/// [`FrameError::Encode`] if serialisation fails, [`FrameError::TooLarge`] if the body is
/// longer than `max_len` (or than `u32::MAX`).
pub fn encode<T: Serialize + ?Sized>(value: &T, max_len: usize) -> Result<Vec<u8>, FrameError> {
    let mut frame = vec![0u8; HEADER_LEN];
    // Same encoding as `rmp_serde::to_vec_named`, written after the space for the prefix.
    rmp_serde::encode::write_named(&mut frame, value).map_err(FrameError::Encode)?;
    let body_len = frame.len() - HEADER_LEN;
    let too_large = || FrameError::TooLarge {
        len: body_len as u64,
        max: max_len,
    };
    if body_len > max_len {
        return Err(too_large());
    }
    let prefix = u32::try_from(body_len).map_err(|_| too_large())?;
    frame[..HEADER_LEN].copy_from_slice(&prefix.to_be_bytes());
    Ok(frame)
}

/// Decodes one whole frame from `frame`, which must hold exactly one frame.
///
/// # Errors
///
/// [`FrameError::Truncated`] if `frame` is shorter than its header says,
/// [`FrameError::TrailingBytes`] if it is longer, [`FrameError::TooLarge`] if the announced
/// length exceeds `max_len`, [`FrameError::Decode`] if the body is not a `T`.
pub fn decode<T: DeserializeOwned>(frame: &[u8], max_len: usize) -> Result<T, FrameError> {
    let Some((header, body)) = frame.split_first_chunk::<HEADER_LEN>() else {
        return Err(FrameError::Truncated {
            expected: HEADER_LEN,
            received: frame.len(),
        });
    };
    let len = check_len(*header, max_len)?;
    match body.len().cmp(&len) {
        std::cmp::Ordering::Less => Err(FrameError::Truncated {
            expected: len,
            received: body.len(),
        }),
        std::cmp::Ordering::Greater => Err(FrameError::TrailingBytes {
            extra: body.len() - len,
        }),
        std::cmp::Ordering::Equal => decode_body(body),
    }
}

/// Writes `value` as one frame and flushes `w`.
///
/// The frame is encoded into one buffer first, so nothing is written when encoding fails or
/// the body is too large.
///
/// # Errors
///
/// As [`encode`], plus [`FrameError::Io`] if the stream fails.
pub async fn write_frame<W, T>(w: &mut W, value: &T, max_len: usize) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize + ?Sized,
{
    let frame = encode(value, max_len)?;
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame from `r` and decodes its body as a `T`.
///
/// Reads exactly one frame: bytes after it stay in `r` for the next call.
///
/// # Errors
///
/// [`FrameError::Closed`] if `r` ends before the frame starts, [`FrameError::Truncated`] if it
/// ends inside the frame, [`FrameError::TooLarge`] if the announced length exceeds `max_len`
/// (the body is then not read), [`FrameError::Decode`] if the body is not a `T`, and
/// [`FrameError::Io`] if the stream fails.
pub async fn read_frame<R, T>(r: &mut R, max_len: usize) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let body = read_frame_body(r, max_len).await?;
    decode_body(&body)
}

/// Reads one frame from `r` and returns its body undecoded.
///
/// # Errors
///
/// As [`read_frame`], without [`FrameError::Decode`].
pub async fn read_frame_body<R>(r: &mut R, max_len: usize) -> Result<Vec<u8>, FrameError>
where
    R: AsyncRead + Unpin,
{
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        let n = r.read(&mut header[filled..]).await?;
        if n == 0 {
            return Err(if filled == 0 {
                FrameError::Closed
            } else {
                FrameError::Truncated {
                    expected: HEADER_LEN,
                    received: filled,
                }
            });
        }
        filled += n;
    }
    let len = check_len(header, max_len)?;

    let mut body = Vec::new();
    let mut filled = 0;
    while filled < len {
        if filled == body.len() {
            // Grow by doubling, capped at the announced length. `reserve_exact` keeps the
            // capacity at `target` (a plain `resize` could round it up past `max_len`).
            let target = len.min(body.len().saturating_mul(2).max(INITIAL_CHUNK));
            body.reserve_exact(target - body.len());
            body.resize(target, 0);
        }
        let n = r.read(&mut body[filled..]).await?;
        if n == 0 {
            return Err(FrameError::Truncated {
                expected: len,
                received: filled,
            });
        }
        filled += n;
    }
    Ok(body)
}

/// Parses a length prefix and checks it against `max_len`.
fn check_len(header: [u8; HEADER_LEN], max_len: usize) -> Result<usize, FrameError> {
    let announced = u32::from_be_bytes(header);
    match usize::try_from(announced) {
        Ok(len) if len <= max_len => Ok(len),
        _ => Err(FrameError::TooLarge {
            len: u64::from(announced),
            max: max_len,
        }),
    }
}

/// Decodes a frame body.
fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    rmp_serde::from_slice(body).map_err(FrameError::Decode)
}
