//! The little of SPDY/3.1 a client of Kubernetes' remote-command protocol needs: frames read and
//! written, `SYN_STREAM` with a header block, `DATA` (with `FIN` to end a stream) and `PING`
//! echoes. Header blocks are sent in a zlib stream of stored (uncompressed) deflate blocks, which
//! any inflater reads whatever dictionary it was given, each block closed by an empty stored block
//! as a zlib sync flush closes it; the peer's header blocks (its `SYN_REPLY`
//! headers) are skipped unread, as nothing in them is needed. There is no flow control: Go's
//! spdystream, which every Kubernetes streaming server uses, sends no `WINDOW_UPDATE` and expects none.

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The frame types this client handles.
pub mod kind {
    /// Opens a stream.
    pub const SYN_STREAM: u16 = 1;
    /// Accepts a stream.
    pub const SYN_REPLY: u16 = 2;
    /// Aborts a stream.
    pub const RST_STREAM: u16 = 3;
    /// Asks for an echo.
    pub const PING: u16 = 6;
    /// Ends the session: no new streams.
    pub const GOAWAY: u16 = 7;
}

/// The flag that ends a stream (on `DATA` and `SYN_STREAM`).
pub const FLAG_FIN: u8 = 0x01;
/// The largest payload one frame carries (24-bit length).
pub const MAX_PAYLOAD: usize = 0xFF_FFFF;
/// The SPDY version spoken.
const VERSION: u16 = 3;

/// A frame as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Data on a stream.
    Data {
        /// The stream.
        stream: u32,
        /// Whether it ends the stream.
        fin: bool,
        /// The bytes.
        data: Bytes,
    },
    /// A control frame.
    Control {
        /// Its type ([`kind`]).
        kind: u16,
        /// Its flags.
        flags: u8,
        /// Its payload.
        payload: Bytes,
    },
}

impl Frame {
    /// The stream a control frame names in its first four bytes (`SYN_REPLY`, `RST_STREAM`).
    pub fn control_stream(payload: &[u8]) -> Option<u32> {
        let b: [u8; 4] = payload.get(..4)?.try_into().ok()?;
        Some(u32::from_be_bytes(b) & 0x7FFF_FFFF)
    }
}

/// Reads one frame; None at a clean end of the connection (between frames).
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Frame>> {
    let mut head = [0u8; 8];
    let n = r.read(&mut head[..1]).await?;
    if n == 0 {
        return Ok(None);
    }
    r.read_exact(&mut head[1..]).await?;
    let flags = head[4];
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    let payload = Bytes::from(payload);
    Ok(Some(if head[0] & 0x80 != 0 {
        Frame::Control {
            kind: u16::from_be_bytes([head[2], head[3]]),
            flags,
            payload,
        }
    } else {
        Frame::Data {
            stream: u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7FFF_FFFF,
            fin: flags & FLAG_FIN != 0,
            data: payload,
        }
    }))
}

fn put_len(out: &mut BytesMut, flags: u8, len: usize) {
    out.put_u8(flags);
    out.put_slice(&(len as u32).to_be_bytes()[1..]);
}

/// A control frame of `kind` with `payload`.
pub fn control(kind: u16, flags: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(8 + payload.len());
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    put_len(&mut out, flags, payload.len());
    out.put_slice(payload);
    out.freeze()
}

/// `DATA` frames carrying `data` on `stream` (several when it is larger than one frame holds), the
/// last with `FIN` when `fin`. Empty data with `fin` is one empty frame that ends the stream.
pub fn data(stream: u32, fin: bool, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(8 + data.len());
    let mut chunks: Vec<&[u8]> = data.chunks(MAX_PAYLOAD).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.into_iter().enumerate() {
        out.put_u32(stream & 0x7FFF_FFFF);
        put_len(
            &mut out,
            if fin && i == last { FLAG_FIN } else { 0 },
            chunk.len(),
        );
        out.put_slice(chunk);
    }
    out.freeze()
}

/// The header blocks one side sends: one zlib stream across the session, each block in stored
/// deflate blocks, so each block ends on a byte boundary as a sync flush leaves it.
#[derive(Debug, Default)]
pub struct HeaderEncoder {
    started: bool,
}

impl HeaderEncoder {
    /// The compressed header block for `headers` (names in lower case).
    pub fn encode(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut plain = BytesMut::new();
        plain.put_u32(headers.len() as u32);
        for (name, value) in headers {
            plain.put_u32(name.len() as u32);
            plain.put_slice(name.as_bytes());
            plain.put_u32(value.len() as u32);
            plain.put_slice(value.as_bytes());
        }
        let mut out = Vec::with_capacity(plain.len() + 16);
        if !self.started {
            // zlib: deflate with a 32 KiB window, no preset dictionary, check bits for 0x7801.
            out.extend_from_slice(&[0x78, 0x01]);
            self.started = true;
        }
        // Stored blocks, not final (BFINAL 0, BTYPE 00, padded to the byte), then an empty one as
        // a sync flush ends with: inflaters (Go's among them) hand out what they have only then.
        for chunk in plain.chunks(0xFFFF).chain(std::iter::once(&[][..])) {
            let len = chunk.len() as u16;
            out.push(0x00);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&(!len).to_le_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }
}

/// A `SYN_STREAM` opening client stream `stream` (odd) with `headers`.
pub fn syn_stream(encoder: &mut HeaderEncoder, stream: u32, headers: &[(&str, &str)]) -> Bytes {
    let block = encoder.encode(headers);
    let mut payload = BytesMut::with_capacity(10 + block.len());
    payload.put_u32(stream & 0x7FFF_FFFF);
    payload.put_u32(0); // associated-to stream
    payload.put_u16(0); // priority and slot
    payload.put_slice(&block);
    control(kind::SYN_STREAM, 0, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inflates stored blocks (what [`HeaderEncoder`] writes) back to the header list.
    fn decode(blocks: &[u8]) -> Vec<(String, String)> {
        assert_eq!(&blocks[..2], &[0x78, 0x01]);
        let mut plain = vec![];
        let mut rest = &blocks[2..];
        while !rest.is_empty() {
            assert_eq!(rest[0], 0);
            // Each header block ends with an empty stored block.
            assert!(rest.ends_with(&[0, 0, 0, 0xff, 0xff]));
            let len = u16::from_le_bytes([rest[1], rest[2]]);
            assert_eq!(!len, u16::from_le_bytes([rest[3], rest[4]]));
            plain.extend_from_slice(&rest[5..5 + len as usize]);
            rest = &rest[5 + len as usize..];
        }
        let word = |b: &[u8]| u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
        let mut out = vec![];
        let mut p = &plain[4..];
        for _ in 0..word(&plain) {
            let n = word(p);
            let name = String::from_utf8(p[4..4 + n].to_vec()).unwrap();
            p = &p[4 + n..];
            let v = word(p);
            let value = String::from_utf8(p[4..4 + v].to_vec()).unwrap();
            p = &p[4 + v..];
            out.push((name, value));
        }
        out
    }

    #[tokio::test]
    async fn writes_and_reads_frames() {
        let mut enc = HeaderEncoder::default();
        let syn = syn_stream(&mut enc, 3, &[("streamtype", "stdout")]);
        let mut wire: Vec<u8> = syn.to_vec();
        wire.extend_from_slice(&data(3, false, b"hello"));
        wire.extend_from_slice(&data(3, true, b""));
        let mut r = &wire[..];
        let Some(Frame::Control {
            kind: kind::SYN_STREAM,
            flags: 0,
            payload,
        }) = read_frame(&mut r).await.unwrap()
        else {
            panic!("a SYN_STREAM");
        };
        assert_eq!(Frame::control_stream(&payload), Some(3));
        assert_eq!(
            decode(&payload[10..]),
            [("streamtype".to_string(), "stdout".to_string())]
        );
        assert_eq!(
            read_frame(&mut r).await.unwrap(),
            Some(Frame::Data {
                stream: 3,
                fin: false,
                data: Bytes::from_static(b"hello")
            })
        );
        assert_eq!(
            read_frame(&mut r).await.unwrap(),
            Some(Frame::Data {
                stream: 3,
                fin: true,
                data: Bytes::new()
            })
        );
        assert_eq!(read_frame(&mut r).await.unwrap(), None);
        // The zlib header comes once per session.
        let second = enc.encode(&[("streamtype", "error")]);
        assert_eq!(second[0], 0x00);
    }
}
