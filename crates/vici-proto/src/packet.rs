//! The packet layer (VICI README, "Packet layer"): an 8-bit type, for the
//! named types an 8-bit name length and the ASCII name, then the message.

use crate::message::{Reader, write_name};
use crate::{Error, Message, Result, frame};

/// The packet types the README defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PacketType {
    /// A named request message.
    CmdRequest = 0,
    /// An unnamed response message for a request.
    CmdResponse = 1,
    /// An unnamed answer: the daemon has no such command.
    CmdUnknown = 2,
    /// A named event registration request.
    EventRegister = 3,
    /// A named event deregistration request.
    EventUnregister = 4,
    /// An unnamed answer: the (de)registration worked.
    EventConfirm = 5,
    /// An unnamed answer: no such event.
    EventUnknown = 6,
    /// A named event message.
    Event = 7,
}

impl PacketType {
    pub fn from_u8(v: u8) -> Result<Self> {
        Ok(match v {
            0 => Self::CmdRequest,
            1 => Self::CmdResponse,
            2 => Self::CmdUnknown,
            3 => Self::EventRegister,
            4 => Self::EventUnregister,
            5 => Self::EventConfirm,
            6 => Self::EventUnknown,
            7 => Self::Event,
            other => return Err(Error::UnknownPacket(other)),
        })
    }
}

/// One packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    CmdRequest { command: String, message: Message },
    CmdResponse(Message),
    CmdUnknown,
    EventRegister(String),
    EventUnregister(String),
    EventConfirm,
    EventUnknown,
    Event { event: String, message: Message },
}

impl Packet {
    /// A command request.
    pub fn request(command: impl Into<String>, message: Message) -> Self {
        Self::CmdRequest { command: command.into(), message }
    }

    /// A command response.
    pub fn response(message: Message) -> Self {
        Self::CmdResponse(message)
    }

    pub fn packet_type(&self) -> PacketType {
        match self {
            Self::CmdRequest { .. } => PacketType::CmdRequest,
            Self::CmdResponse(_) => PacketType::CmdResponse,
            Self::CmdUnknown => PacketType::CmdUnknown,
            Self::EventRegister(_) => PacketType::EventRegister,
            Self::EventUnregister(_) => PacketType::EventUnregister,
            Self::EventConfirm => PacketType::EventConfirm,
            Self::EventUnknown => PacketType::EventUnknown,
            Self::Event { .. } => PacketType::Event,
        }
    }

    /// The name of a named packet (command or event).
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::CmdRequest { command: n, .. }
            | Self::EventRegister(n)
            | Self::EventUnregister(n)
            | Self::Event { event: n, .. } => Some(n),
            _ => None,
        }
    }

    /// The message of a packet that carries one.
    pub fn message(&self) -> Option<&Message> {
        match self {
            Self::CmdRequest { message, .. } | Self::CmdResponse(message) | Self::Event { message, .. } => {
                Some(message)
            }
            _ => None,
        }
    }

    /// The packet without the transport's length header. The caller
    /// should wipe it when the message holds a secret (see
    /// [`Packet::encode_frame`], which returns a zeroizing buffer).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        out.push(self.packet_type() as u8);
        if let Some(name) = self.name() {
            write_name(name, out)?;
        }
        if let Some(m) = self.message() {
            m.encode(out)?;
        }
        Ok(())
    }

    /// The packet as one transport byte sequence, length header included,
    /// in a buffer that is wiped when dropped.
    pub fn encode_frame(&self) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        let mut body = zeroize::Zeroizing::new(Vec::new());
        self.encode(&mut body)?;
        let mut out = zeroize::Zeroizing::new(Vec::new());
        frame::encode(&body, &mut out)?;
        Ok(out)
    }

    /// A packet from one transport byte sequence (without its length).
    pub fn decode(body: &[u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        let ty = PacketType::from_u8(r.u8("packet type")?)?;
        let named = |r: &mut Reader<'_>| r.name("packet name");
        let p = match ty {
            PacketType::CmdRequest => {
                let command = named(&mut r)?;
                Self::CmdRequest { command, message: Message::decode_from(&mut r)? }
            }
            PacketType::CmdResponse => Self::CmdResponse(Message::decode_from(&mut r)?),
            PacketType::CmdUnknown => Self::CmdUnknown,
            PacketType::EventRegister => Self::EventRegister(named(&mut r)?),
            PacketType::EventUnregister => Self::EventUnregister(named(&mut r)?),
            PacketType::EventConfirm => Self::EventConfirm,
            PacketType::EventUnknown => Self::EventUnknown,
            PacketType::Event => {
                let event = named(&mut r)?;
                Self::Event { event, message: Message::decode_from(&mut r)? }
            }
        };
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let mut out = Vec::new();
        Packet::request("version", Message::new()).encode(&mut out).unwrap();
        assert_eq!(out, b"\x00\x07version");
        let mut out = Vec::new();
        Packet::EventRegister("list-sa".into()).encode(&mut out).unwrap();
        assert_eq!(out, b"\x03\x07list-sa");
        let framed = Packet::EventConfirm.encode_frame().unwrap();
        assert_eq!(&framed[..], &[0, 0, 0, 1, 5]);
    }

    #[test]
    fn every_type_round_trips() {
        let m = Message::new().with_value("k", "v");
        for p in [
            Packet::request("list-sas", m.clone()),
            Packet::response(m.clone()),
            Packet::CmdUnknown,
            Packet::EventRegister("list-sa".into()),
            Packet::EventUnregister("list-sa".into()),
            Packet::EventConfirm,
            Packet::EventUnknown,
            Packet::Event { event: "list-sa".into(), message: m.clone() },
        ] {
            let mut out = Vec::new();
            p.encode(&mut out).unwrap();
            assert_eq!(Packet::decode(&out).unwrap(), p);
        }
    }

    #[test]
    fn bad_packets() {
        assert_eq!(Packet::decode(&[]), Err(Error::Truncated("packet type")));
        assert_eq!(Packet::decode(&[8]), Err(Error::UnknownPacket(8)));
        assert_eq!(Packet::decode(&[0, 5, b'a']), Err(Error::Truncated("packet name")));
        assert_eq!(Packet::decode(&[3, 1, 0xff]), Err(Error::NameNotAscii));
    }
}
