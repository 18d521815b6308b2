//! What the switch does with one frame, independent of sockets: decode,
//! classify, validate, answer network management itself and hand financial
//! messages to an [`Authorizer`]. Every request whose MTI, bitmaps and field
//! boundaries parse gets an answer; only a frame whose structure cannot be
//! parsed closes its connection.

use super::respond::{respond, Added};
use crate::iso8583::{de, Message};
use crate::pan::mask_pan_bytes as mask_pan;
use bytes::{Bytes, BytesMut};
use std::future::Future;
use std::pin::Pin;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

/// A response that will be ready later (after the ledger made it durable).
pub type Pending = Pin<Box<dyn Future<Output = BytesMut> + Send + 'static>>;

/// The switch's answer to one frame.
pub enum Reply {
    /// Send this response now.
    Now(BytesMut),
    /// Send the response when it resolves; later frames are not held up.
    Later(Pending),
    /// The authorizer took the [`Sink`] and answers through it.
    Taken,
    /// Nothing to send (e.g. an unsolicited response message from a client).
    Nothing,
    /// The frame's structure could not be parsed: close the connection.
    Close(crate::iso8583::Error),
}

/// Where a response goes once it is ready: the connection's writer, with
/// one of the connection's in-flight slots, which is given back once the
/// response is queued to the writer.
pub struct Sink {
    tx: mpsc::Sender<BytesMut>,
    permit: OwnedSemaphorePermit,
}

impl Sink {
    pub(crate) fn new(tx: mpsc::Sender<BytesMut>, permit: OwnedSemaphorePermit) -> Sink {
        Sink { tx, permit }
    }

    /// Queue `resp` to the writer without waiting. The writer's queue holds
    /// as many responses as the connection may have in flight, so it is
    /// full only while the writer is behind (a client not reading, or a
    /// burst of answers the switch gave at once); then a task waits for
    /// room, and the in-flight slot stays taken until it has it.
    pub fn send(self, resp: BytesMut) {
        let Sink { tx, permit } = self;
        match tx.try_send(resp) {
            Ok(()) => drop(permit),
            Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(resp)) => {
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        let _ = tx.send(resp).await;
                        drop(permit);
                    });
                }
            }
        }
    }

    /// Queue `resp` to the writer, waiting for room.
    pub async fn send_wait(self, resp: BytesMut) {
        let _ = self.tx.send(resp).await;
        drop(self.permit);
    }
}

/// Financial message handling (0200 and reversals): implemented by the
/// authorization layer. `authorize` is called on the connection's task in
/// arrival order and may wait for admission to a shard queue, so requests
/// from one connection take effect in the order they arrived.
pub trait Authorizer: Send + Sync + 'static {
    /// Take a decoded, validated request with its mandatory fields present.
    /// An authorizer that answers later may take `sink` and answer through
    /// it ([`Reply::Taken`]); otherwise it returns the reply.
    fn authorize(
        &self,
        req: Message<Bytes>,
        sink: &mut Option<Sink>,
    ) -> impl Future<Output = Reply> + Send;

    /// Answer a request that the switch declines itself (30 format, 12
    /// unsupported MTI). The default adds no MAC; an issuer that knows the
    /// terminal signs it, as INTERFACE §6 asks of every response to a MAC
    /// terminal.
    fn reject(&self, req: &Message<Bytes>, code: &[u8; 2]) -> BytesMut {
        answer(req, code)
    }
}

/// The authorizer used while no ledger is attached: every financial request
/// is answered 91 (issuer unavailable), after the same validation as always.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoIssuer;

impl Authorizer for NoIssuer {
    async fn authorize(&self, req: Message<Bytes>, _: &mut Option<Sink>) -> Reply {
        Reply::Now(answer(&req, b"91"))
    }
}

/// Encode a plain response (echo fields + DE39) to `req`.
pub fn answer<B: AsRef<[u8]>>(req: &Message<B>, code: &[u8; 2]) -> BytesMut {
    let mut out = BytesMut::with_capacity(192);
    respond(req, code, Added::default(), None, &mut out);
    out
}

/// MTIs this host answers as requests.
fn supported(mti: &[u8]) -> bool {
    matches!(
        mti,
        b"0200" | b"0400" | b"0401" | b"0420" | b"0421" | b"0800"
    )
}

/// True for MTIs whose function digit marks a response or acknowledgement
/// (x1x0, x3x0): a host never answers those.
fn is_response(mti: &[u8]) -> bool {
    matches!(mti.get(2), Some(b'1' | b'3' | b'5' | b'7' | b'9'))
}

/// Handle one frame (message bytes, header already stripped). `sink` is
/// where an authorizer that answers later may send its response.
pub async fn handle<A: Authorizer>(
    auth: &A,
    frame: Bytes,
    peer: &str,
    sink: &mut Option<Sink>,
) -> Reply {
    let msg = match Message::decode(frame) {
        Ok(m) => m,
        Err(e) => {
            return Reply::Close(e);
        }
    };
    let mti = msg.mti();
    if is_response(mti) {
        tracing::warn!(peer, mti = %String::from_utf8_lossy(mti), "unsolicited response message ignored");
        return Reply::Nothing;
    }
    if !supported(mti) {
        tracing::info!(peer, mti = %String::from_utf8_lossy(mti), "unsupported MTI answered 12");
        return Reply::Now(auth.reject(&msg, b"12"));
    }
    if let Err(e) = msg.validate().and_then(|_| msg.check_mandatory()) {
        tracing::info!(
            peer,
            mti = %String::from_utf8_lossy(mti),
            stan = %msg.get_str(de::STAN).unwrap_or("-"),
            error = %e,
            "format error answered 30"
        );
        if mti == b"0800" {
            return Reply::Now(answer(&msg, b"30"));
        }
        return Reply::Now(auth.reject(&msg, b"30"));
    }
    if mti == b"0800" {
        return Reply::Now(network_management(&msg, peer));
    }
    if tracing::enabled!(tracing::Level::DEBUG) {
        tracing::debug!(
            peer,
            mti = %String::from_utf8_lossy(mti),
            pan = %mask_pan(msg.get(de::PAN).unwrap_or_default()),
            stan = %msg.get_str(de::STAN).unwrap_or("-"),
            "financial request"
        );
    }
    auth.authorize(msg, sink).await
}

fn network_management(msg: &Message<Bytes>, peer: &str) -> BytesMut {
    let code = msg.network_code().unwrap_or_default();
    let terminal = msg.get_str(de::TERMINAL).unwrap_or("-");
    match code {
        b"001" => {
            tracing::info!(peer, terminal, "sign-on");
            answer(msg, b"00")
        }
        b"002" => {
            tracing::info!(peer, terminal, "sign-off (connection stays open)");
            answer(msg, b"00")
        }
        b"301" => answer(msg, b"00"),
        other => {
            tracing::info!(peer, terminal, code = %String::from_utf8_lossy(other), "unsupported network management code answered 12");
            answer(msg, b"12")
        }
    }
}
