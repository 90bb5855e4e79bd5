//! Moving whole PDUs over a socket during login (one request, one
//! response). The full feature phase uses the connection tasks instead.

use std::time::Duration;

use bytes::BytesMut;
use iscsi_proto::pdu::{FrameConfig, Pdu, PduDecoder, encode_pdu};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Result};

/// Read buffer growth step; also the least free space kept before a read.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

pub(crate) async fn send_pdu<W: AsyncWrite + Unpin>(w: &mut W, pdu: &Pdu, cfg: &FrameConfig) -> Result<()> {
    let mut out = BytesMut::with_capacity(48 + pdu.data.len() + 16);
    encode_pdu(pdu, cfg, &mut out);
    w.write_all(&out).await?;
    Ok(())
}

/// Reads until one whole PDU is framed, within `timeout`.
pub(crate) async fn recv_pdu<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    decoder: &mut PduDecoder,
    timeout: Duration,
    what: &str,
) -> Result<Pdu> {
    let fut = async {
        loop {
            if let Some(pdu) = decoder.decode(buf)? {
                return Ok(pdu);
            }
            if buf.capacity() - buf.len() < READ_CHUNK {
                buf.reserve(READ_CHUNK);
            }
            let n = r.read_buf(buf).await?;
            if n == 0 {
                return Err(Error::ConnectionLost(format!("target closed the connection during {what}")));
            }
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout(format!("{what} ({} s)", timeout.as_secs()))),
    }
}
