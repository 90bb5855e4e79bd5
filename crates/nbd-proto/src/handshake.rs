//! Server side of the fixed newstyle handshake (proto.md "Fixed newstyle negotiation", "Option types"),
//! as a sans-IO state machine: [`ServerHandshake::receive`] takes whatever bytes the socket produced,
//! [`ServerHandshake::poll_transmit`] hands back what to send, and the [`Progress`] says when option
//! haggling is over.
//!
//! Input is consumed one protocol item at a time, so the buffer never holds more than one option
//! (bounded by [`HandshakeLimits::max_option_len`]) and bytes after the final option are returned
//! untouched in [`Negotiated::leftover`].

use bytes::{BufMut, Bytes, BytesMut};

use crate::export::{ExportError, ExportInfo, MAX_STRING_LEN, TransmissionParams};
use crate::flags::{ClientFlags, HandshakeFlags, TransmissionFlags};
use crate::magic::{IHAVEOPT, NBDMAGIC, OPTION_REPLY_MAGIC};
use crate::option::{InfoType, OPTION_HEADER_LEN, OptionCode, OptionReplyType};
use crate::wire::Reader;

/// Bounds on what a client may make the server hold or do during the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// Longest option data accepted; a longer option ends the handshake before anything is allocated.
    /// The spec lets a server hard-disconnect a client whose behaviour amounts to denial of service.
    pub max_option_len: u32,
    /// Most options accepted on one connection, counting the final one.
    pub max_options: u32,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        Self { max_option_len: 64 * 1024, max_options: 64 }
    }
}

/// Number of zero bytes after the `NBD_OPT_EXPORT_NAME` reply unless `NO_ZEROES` was agreed.
const EXPORT_NAME_ZEROES: usize = 124;

/// How the client ended option haggling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnteredBy {
    /// `NBD_OPT_EXPORT_NAME`; `no_zeroes` says whether the 124 zero bytes were left out.
    ExportName { no_zeroes: bool },
    /// `NBD_OPT_GO` answered with `NBD_REP_ACK`.
    Go,
}

/// The handshake is over and transmission starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub entered_by: EnteredBy,
    /// What requests are validated against (size, flags as sent, block sizes, structured replies).
    pub params: TransmissionParams,
    /// Bytes received after the final option: the start of the transmission phase.
    pub leftover: Bytes,
}

/// Where the handshake stands after some input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Send what [`ServerHandshake::poll_transmit`] gives, then read more.
    NeedInput,
    /// The client sent `NBD_OPT_ABORT`: send the queued `NBD_REP_ACK`, then close.
    Aborted,
    /// Send the queued bytes, then enter transmission.
    Ready(Negotiated),
}

/// A client that broke a rule the server cannot answer with an error reply: the connection must close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("client did not set NBD_FLAG_C_FIXED_NEWSTYLE (flags {0:#x}); only fixed newstyle is served")]
    NotFixedNewstyle(u32),
    #[error("client set unknown handshake flags {0:#x}")]
    UnknownClientFlags(u32),
    #[error("option request magic {0:#018x} is not IHAVEOPT")]
    BadOptionMagic(u64),
    #[error("option {option} carries {length} bytes, more than the limit of {limit}")]
    OptionTooLong { option: u32, length: u32, limit: u32 },
    #[error("client sent more than {0} options")]
    TooManyOptions(u32),
    #[error("NBD_OPT_EXPORT_NAME asked for unknown export {0:?}; that option cannot be refused politely")]
    UnknownExport(String),
    #[error("input after the handshake finished")]
    Finished,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    ClientFlags,
    OptionHeader,
    OptionData { option: OptionCode, len: u32 },
    Finished,
}

impl State {
    /// Bytes the current item needs in full before it can be parsed.
    fn need(self) -> usize {
        match self {
            State::ClientFlags => 4,
            State::OptionHeader => OPTION_HEADER_LEN,
            State::OptionData { len, .. } => usize::try_from(len).unwrap_or(usize::MAX),
            State::Finished => 0,
        }
    }
}

enum Step {
    Continue,
    Aborted,
    Ready(EnteredBy),
}

/// The server's half of one connection's handshake.
#[derive(Debug)]
pub struct ServerHandshake {
    export: ExportInfo,
    limits: HandshakeLimits,
    state: State,
    /// The part of the current item received so far; never longer than `state.need()`.
    partial: BytesMut,
    out: BytesMut,
    options: u32,
    no_zeroes: bool,
    structured: bool,
}

impl ServerHandshake {
    /// Starts a handshake offering `export`; the greeting is queued for [`Self::poll_transmit`] at once.
    pub fn new(export: ExportInfo, limits: HandshakeLimits) -> Result<Self, ExportError> {
        export.validate()?;
        let mut out = BytesMut::with_capacity(18);
        out.put_u64(NBDMAGIC);
        out.put_u64(IHAVEOPT);
        out.put_u16((HandshakeFlags::FIXED_NEWSTYLE | HandshakeFlags::NO_ZEROES).bits());
        Ok(Self {
            export,
            limits,
            state: State::ClientFlags,
            partial: BytesMut::new(),
            out,
            options: 0,
            no_zeroes: false,
            structured: false,
        })
    }

    /// Bytes to send to the client, if any are queued.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        if self.out.is_empty() { None } else { Some(self.out.split().freeze()) }
    }

    /// Has option haggling ended (successfully, by abort or by error)?
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// Feeds bytes from the client, in any split. After an `Err`, the connection must be closed (some
    /// replies may still be queued; sending them is optional).
    pub fn receive(&mut self, mut input: &[u8]) -> Result<Progress, HandshakeError> {
        loop {
            if self.state == State::Finished {
                return Err(HandshakeError::Finished);
            }
            let missing = self.state.need().saturating_sub(self.partial.len());
            let (head, rest) = input.split_at_checked(missing.min(input.len())).unwrap_or((input, &[]));
            self.partial.extend_from_slice(head);
            input = rest;
            if self.partial.len() < self.state.need() {
                return Ok(Progress::NeedInput);
            }
            let item = self.partial.split().freeze();
            let step = match self.step(&item) {
                Ok(step) => step,
                Err(e) => {
                    self.state = State::Finished;
                    return Err(e);
                }
            };
            match step {
                Step::Continue => {}
                Step::Aborted => {
                    self.state = State::Finished;
                    return Ok(Progress::Aborted);
                }
                Step::Ready(entered_by) => {
                    self.state = State::Finished;
                    let params = TransmissionParams {
                        size: self.export.size,
                        flags: self.flags(),
                        block_sizes: self.export.block_sizes,
                        structured_replies: self.structured,
                    };
                    return Ok(Progress::Ready(Negotiated {
                        entered_by,
                        params,
                        leftover: Bytes::copy_from_slice(input),
                    }));
                }
            }
        }
    }

    fn flags(&self) -> TransmissionFlags {
        self.export.flags_for(self.structured)
    }

    fn step(&mut self, item: &[u8]) -> Result<Step, HandshakeError> {
        let mut r = Reader::new(item);
        match self.state {
            // proto.md "Client flags": unknown bits MUST make the server drop the connection.
            State::ClientFlags => {
                let flags = ClientFlags(r.u32().unwrap_or(0));
                if !ClientFlags::KNOWN.contains(flags) {
                    return Err(HandshakeError::UnknownClientFlags(flags.bits()));
                }
                if !flags.contains(ClientFlags::FIXED_NEWSTYLE) {
                    return Err(HandshakeError::NotFixedNewstyle(flags.bits()));
                }
                self.no_zeroes = flags.contains(ClientFlags::NO_ZEROES);
                self.state = State::OptionHeader;
                Ok(Step::Continue)
            }
            State::OptionHeader => {
                let magic = r.u64().unwrap_or(0);
                let option = r.u32().unwrap_or(0);
                let len = r.u32().unwrap_or(0);
                if magic != IHAVEOPT {
                    return Err(HandshakeError::BadOptionMagic(magic));
                }
                self.options = self.options.saturating_add(1);
                if self.options > self.limits.max_options {
                    return Err(HandshakeError::TooManyOptions(self.limits.max_options));
                }
                if len > self.limits.max_option_len {
                    return Err(HandshakeError::OptionTooLong {
                        option,
                        length: len,
                        limit: self.limits.max_option_len,
                    });
                }
                self.state = State::OptionData { option: OptionCode(option), len };
                Ok(Step::Continue)
            }
            State::OptionData { option, .. } => {
                self.state = State::OptionHeader;
                self.option(option, item)
            }
            State::Finished => Err(HandshakeError::Finished),
        }
    }

    fn option(&mut self, option: OptionCode, data: &[u8]) -> Result<Step, HandshakeError> {
        match option {
            // proto.md `NBD_OPT_EXPORT_NAME`: no error reply exists, so an unknown name closes.
            OptionCode::EXPORT_NAME => {
                if !self.export.selected_by(data) {
                    return Err(HandshakeError::UnknownExport(String::from_utf8_lossy(data).into_owned()));
                }
                self.out.put_u64(self.export.size);
                self.out.put_u16(self.flags().bits());
                if !self.no_zeroes {
                    self.out.put_bytes(0, EXPORT_NAME_ZEROES);
                }
                Ok(Step::Ready(EnteredBy::ExportName { no_zeroes: self.no_zeroes }))
            }
            // proto.md `NBD_OPT_ABORT`: reply ACK, ignore any data.
            OptionCode::ABORT => {
                self.reply(option, OptionReplyType::ACK, &[]);
                Ok(Step::Aborted)
            }
            OptionCode::LIST => {
                if !data.is_empty() {
                    self.error(option, OptionReplyType::ERR_INVALID, "NBD_OPT_LIST carries no data");
                    return Ok(Step::Continue);
                }
                let name = self.export.name.as_bytes();
                let mut server = Vec::with_capacity(4 + name.len() + self.export.description.len());
                server.extend_from_slice(&len_u32(name.len()).to_be_bytes());
                server.extend_from_slice(name);
                server.extend_from_slice(self.export.description.as_bytes());
                self.reply(option, OptionReplyType::SERVER, &server);
                self.reply(option, OptionReplyType::ACK, &[]);
                Ok(Step::Continue)
            }
            OptionCode::STRUCTURED_REPLY => {
                if !data.is_empty() {
                    self.error(option, OptionReplyType::ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY carries no data");
                    return Ok(Step::Continue);
                }
                self.structured = true;
                self.reply(option, OptionReplyType::ACK, &[]);
                Ok(Step::Continue)
            }
            OptionCode::INFO | OptionCode::GO => Ok(self.info_or_go(option, data)),
            _ => {
                self.error(option, OptionReplyType::ERR_UNSUP, "option not supported by this server");
                Ok(Step::Continue)
            }
        }
    }

    /// proto.md `NBD_OPT_INFO` and `NBD_OPT_GO`: name length, name, count of info requests, requests.
    /// We send every information type we have whatever was asked: a client must ignore those it does
    /// not understand, and block sizes are worth announcing.
    fn info_or_go(&mut self, option: OptionCode, data: &[u8]) -> Step {
        let mut r = Reader::new(data);
        let parsed = (|| {
            let name_len = usize::try_from(r.u32()?).ok()?;
            let name = r.bytes(name_len)?;
            let count = usize::from(r.u16()?);
            (r.remaining() == 2 * count && name_len <= MAX_STRING_LEN).then_some(name)
        })();
        let Some(name) = parsed else {
            self.error(option, OptionReplyType::ERR_INVALID, "malformed NBD_OPT_INFO/NBD_OPT_GO data");
            return Step::Continue;
        };
        if !self.export.selected_by(name) {
            self.error(option, OptionReplyType::ERR_UNKNOWN, "no export of that name");
            return Step::Continue;
        }
        let mut info = Vec::with_capacity(16 + self.export.name.len().max(self.export.description.len()));
        let name = self.export.name.clone();
        self.info(option, &mut info, InfoType::NAME, |v| v.extend_from_slice(name.as_bytes()));
        let description = self.export.description.clone();
        self.info(option, &mut info, InfoType::DESCRIPTION, |v| v.extend_from_slice(description.as_bytes()));
        let sizes = self.export.block_sizes;
        self.info(option, &mut info, InfoType::BLOCK_SIZE, |v| {
            v.extend_from_slice(&sizes.min.to_be_bytes());
            v.extend_from_slice(&sizes.preferred.to_be_bytes());
            v.extend_from_slice(&sizes.max.to_be_bytes());
        });
        let (size, flags) = (self.export.size, self.flags());
        self.info(option, &mut info, InfoType::EXPORT, |v| {
            v.extend_from_slice(&size.to_be_bytes());
            v.extend_from_slice(&flags.bits().to_be_bytes());
        });
        self.reply(option, OptionReplyType::ACK, &[]);
        if option == OptionCode::GO { Step::Ready(EnteredBy::Go) } else { Step::Continue }
    }

    fn info(&mut self, option: OptionCode, scratch: &mut Vec<u8>, ty: InfoType, body: impl FnOnce(&mut Vec<u8>)) {
        scratch.clear();
        scratch.extend_from_slice(&ty.0.to_be_bytes());
        body(scratch);
        self.reply(option, OptionReplyType::INFO, scratch);
    }

    fn error(&mut self, option: OptionCode, ty: OptionReplyType, message: &str) {
        self.reply(option, ty, message.as_bytes());
    }

    fn reply(&mut self, option: OptionCode, ty: OptionReplyType, data: &[u8]) {
        self.out.reserve(20 + data.len());
        self.out.put_u64(OPTION_REPLY_MAGIC);
        self.out.put_u32(option.0);
        self.out.put_u32(ty.0);
        self.out.put_u32(len_u32(data.len()));
        self.out.put_slice(data);
    }
}

/// Reply data is built from the validated export (strings of at most 4096 bytes) and fixed-size
/// fields, so it always fits.
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::BlockSizes;
    use crate::option::{OPTION_REPLY_HEADER_LEN, OptionReplyHeader, encode_info_request, encode_option};

    pub(crate) fn export() -> ExportInfo {
        ExportInfo {
            name: "lun0".into(),
            description: "test LUN".into(),
            size: 1 << 30,
            flags: TransmissionFlags::SEND_FLUSH | TransmissionFlags::SEND_FUA,
            block_sizes: BlockSizes { min: 512, preferred: 4096, max: 1 << 25 },
        }
    }

    fn start() -> ServerHandshake {
        ServerHandshake::new(export(), HandshakeLimits::default()).unwrap()
    }

    fn opt(option: OptionCode, data: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_option(&mut out, option, data).unwrap();
        out.to_vec()
    }

    fn drain(hs: &mut ServerHandshake) -> Vec<u8> {
        let mut all = Vec::new();
        while let Some(b) = hs.poll_transmit() {
            all.extend_from_slice(&b);
        }
        all
    }

    /// Splits the server's option replies into (header, data) pairs.
    fn replies(mut buf: &[u8]) -> Vec<(OptionReplyHeader, Vec<u8>)> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let h = OptionReplyHeader::decode(buf).expect("reply header");
            let end = OPTION_REPLY_HEADER_LEN + h.length as usize;
            out.push((h, buf[OPTION_REPLY_HEADER_LEN..end].to_vec()));
            buf = &buf[end..];
        }
        out
    }

    /// A handshake past the greeting and the client flags.
    fn haggling(flags: u32) -> ServerHandshake {
        let mut hs = start();
        drain(&mut hs);
        assert_eq!(hs.receive(&flags.to_be_bytes()).unwrap(), Progress::NeedInput);
        hs
    }

    #[test]
    fn greeting_is_nbdmagic_ihaveopt_and_flags() {
        let mut hs = start();
        let g = drain(&mut hs);
        assert_eq!(&g[..16], b"NBDMAGICIHAVEOPT");
        assert_eq!(&g[16..], &[0, 0b11]);
        assert!(hs.poll_transmit().is_none());
    }

    #[test]
    fn client_without_fixed_newstyle_is_refused() {
        let mut hs = start();
        assert_eq!(hs.receive(&[0, 0, 0, 0]), Err(HandshakeError::NotFixedNewstyle(0)));
        assert!(hs.is_finished());
        assert_eq!(hs.receive(&[0]), Err(HandshakeError::Finished));
    }

    #[test]
    fn unknown_client_flags_are_refused() {
        let mut hs = start();
        assert_eq!(hs.receive(&[0, 0, 0, 5]), Err(HandshakeError::UnknownClientFlags(5)));
    }

    #[test]
    fn export_name_with_zeroes() {
        let mut hs = haggling(1);
        let p = hs.receive(&opt(OptionCode::EXPORT_NAME, b"lun0")).unwrap();
        let Progress::Ready(n) = p else { panic!("{p:?}") };
        assert_eq!(n.entered_by, EnteredBy::ExportName { no_zeroes: false });
        assert!(!n.params.structured_replies);
        let out = drain(&mut hs);
        assert_eq!(out.len(), 8 + 2 + 124);
        assert_eq!(&out[..8], &(1u64 << 30).to_be_bytes());
        assert_eq!(&out[8..10], &0b1101u16.to_be_bytes());
        assert!(out[10..].iter().all(|&b| b == 0));
    }

    #[test]
    fn export_name_no_zeroes_and_leftover() {
        let mut hs = haggling(3);
        let mut input = opt(OptionCode::EXPORT_NAME, b"");
        input.extend_from_slice(b"request bytes");
        let Progress::Ready(n) = hs.receive(&input).unwrap() else { panic!() };
        assert_eq!(n.entered_by, EnteredBy::ExportName { no_zeroes: true });
        assert_eq!(&n.leftover[..], b"request bytes");
        assert_eq!(drain(&mut hs).len(), 10);
    }

    #[test]
    fn export_name_unknown_closes() {
        let mut hs = haggling(1);
        assert_eq!(
            hs.receive(&opt(OptionCode::EXPORT_NAME, b"other")),
            Err(HandshakeError::UnknownExport("other".into()))
        );
    }

    #[test]
    fn go_sends_every_info_then_ack() {
        let mut hs = haggling(1);
        let data = encode_info_request(b"lun0", &[InfoType::BLOCK_SIZE]).unwrap();
        let Progress::Ready(n) = hs.receive(&opt(OptionCode::GO, &data)).unwrap() else { panic!() };
        assert_eq!(n.entered_by, EnteredBy::Go);
        assert_eq!(n.params.size, 1 << 30);
        assert_eq!(n.params.block_sizes, export().block_sizes);
        let r = replies(&drain(&mut hs));
        let types: Vec<_> = r.iter().map(|(h, _)| h.reply_type).collect();
        assert_eq!(types, [OptionReplyType::INFO; 4].into_iter().chain([OptionReplyType::ACK]).collect::<Vec<_>>());
        assert!(r.iter().all(|(h, _)| h.option == OptionCode::GO));
        let by_info = |t: InfoType| r.iter().find(|(_, d)| d[..2] == t.0.to_be_bytes()).map(|(_, d)| d[2..].to_vec());
        assert_eq!(by_info(InfoType::NAME).unwrap(), b"lun0");
        assert_eq!(by_info(InfoType::DESCRIPTION).unwrap(), b"test LUN");
        assert_eq!(by_info(InfoType::BLOCK_SIZE).unwrap(), [0, 0, 2, 0, 0, 0, 16, 0, 2, 0, 0, 0]);
        let ex = by_info(InfoType::EXPORT).unwrap();
        assert_eq!(ex.len(), 10);
        assert_eq!(&ex[8..], &0b1101u16.to_be_bytes());
    }

    #[test]
    fn info_does_not_end_haggling() {
        let mut hs = haggling(1);
        let data = encode_info_request(b"", &[]).unwrap();
        assert_eq!(hs.receive(&opt(OptionCode::INFO, &data)).unwrap(), Progress::NeedInput);
        assert_eq!(replies(&drain(&mut hs)).last().unwrap().0.reply_type, OptionReplyType::ACK);
        assert!(matches!(hs.receive(&opt(OptionCode::GO, &data)).unwrap(), Progress::Ready(_)));
    }

    #[test]
    fn go_unknown_export_is_err_unknown_and_haggling_goes_on() {
        let mut hs = haggling(1);
        let data = encode_info_request(b"nope", &[]).unwrap();
        assert_eq!(hs.receive(&opt(OptionCode::GO, &data)).unwrap(), Progress::NeedInput);
        let r = replies(&drain(&mut hs));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0.reply_type, OptionReplyType::ERR_UNKNOWN);
        assert!(!r[0].1.is_empty(), "error replies carry a message");
    }

    #[test]
    fn go_malformed_data_is_err_invalid() {
        for data in [
            vec![0, 0, 0],                                                  // too short for the name length
            vec![0, 0, 0, 9, b'a', 0, 0],                                   // name longer than the data
            vec![0, 0, 0, 0, 0, 2, 0, 1],                                   // two requests announced, one sent
            vec![0, 0, 0, 0, 0, 0, 0],                                      // a stray byte
            encode_info_request(&[b'a'; MAX_STRING_LEN + 1], &[]).unwrap(), // name too long
        ] {
            let mut hs = haggling(1);
            assert_eq!(hs.receive(&opt(OptionCode::GO, &data)).unwrap(), Progress::NeedInput);
            let r = replies(&drain(&mut hs));
            assert_eq!(r[0].0.reply_type, OptionReplyType::ERR_INVALID, "{data:?}");
        }
    }

    #[test]
    fn structured_reply_sets_df_and_is_reported() {
        let mut hs = haggling(1);
        hs.receive(&opt(OptionCode::STRUCTURED_REPLY, b"")).unwrap();
        assert_eq!(replies(&drain(&mut hs))[0].0.reply_type, OptionReplyType::ACK);
        let data = encode_info_request(b"lun0", &[]).unwrap();
        let Progress::Ready(n) = hs.receive(&opt(OptionCode::GO, &data)).unwrap() else { panic!() };
        assert!(n.params.structured_replies);
        assert!(n.params.flags.contains(TransmissionFlags::SEND_DF | TransmissionFlags::HAS_FLAGS));
    }

    #[test]
    fn structured_reply_with_data_is_invalid() {
        let mut hs = haggling(1);
        hs.receive(&opt(OptionCode::STRUCTURED_REPLY, b"x")).unwrap();
        assert_eq!(replies(&drain(&mut hs))[0].0.reply_type, OptionReplyType::ERR_INVALID);
        let data = encode_info_request(b"", &[]).unwrap();
        let Progress::Ready(n) = hs.receive(&opt(OptionCode::GO, &data)).unwrap() else { panic!() };
        assert!(!n.params.structured_replies);
        assert!(!n.params.flags.contains(TransmissionFlags::SEND_DF));
    }

    #[test]
    fn list_names_the_export() {
        let mut hs = haggling(1);
        hs.receive(&opt(OptionCode::LIST, b"")).unwrap();
        let r = replies(&drain(&mut hs));
        assert_eq!(r[0].0.reply_type, OptionReplyType::SERVER);
        assert_eq!(r[0].1, b"\0\0\0\x04lun0test LUN");
        assert_eq!(r[1].0.reply_type, OptionReplyType::ACK);
        hs.receive(&opt(OptionCode::LIST, b"junk")).unwrap();
        assert_eq!(replies(&drain(&mut hs))[0].0.reply_type, OptionReplyType::ERR_INVALID);
    }

    #[test]
    fn abort_is_acked() {
        let mut hs = haggling(1);
        assert_eq!(hs.receive(&opt(OptionCode::ABORT, b"ignored")).unwrap(), Progress::Aborted);
        let r = replies(&drain(&mut hs));
        assert_eq!((r[0].0.option, r[0].0.reply_type), (OptionCode::ABORT, OptionReplyType::ACK));
    }

    #[test]
    fn unknown_and_unsupported_options_are_err_unsup() {
        for code in [OptionCode::STARTTLS, OptionCode::SET_META_CONTEXT, OptionCode(0xdead)] {
            let mut hs = haggling(1);
            assert_eq!(hs.receive(&opt(code, b"abc")).unwrap(), Progress::NeedInput);
            let r = replies(&drain(&mut hs));
            assert_eq!((r[0].0.option, r[0].0.reply_type), (code, OptionReplyType::ERR_UNSUP));
        }
    }

    #[test]
    fn oversize_option_ends_before_its_data_arrives() {
        let mut hs = haggling(1);
        let mut header = Vec::new();
        header.extend_from_slice(&IHAVEOPT.to_be_bytes());
        header.extend_from_slice(&7u32.to_be_bytes());
        header.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            hs.receive(&header),
            Err(HandshakeError::OptionTooLong { option: 7, length: u32::MAX, limit: 64 * 1024 })
        );
        assert!(hs.partial.capacity() < 1024, "nothing sized by the bogus length was allocated");
    }

    #[test]
    fn bad_option_magic_closes() {
        let mut hs = haggling(1);
        assert!(matches!(hs.receive(&[0u8; 16]), Err(HandshakeError::BadOptionMagic(0))));
    }

    #[test]
    fn option_count_is_capped() {
        let mut hs = ServerHandshake::new(export(), HandshakeLimits { max_option_len: 16, max_options: 3 }).unwrap();
        hs.receive(&1u32.to_be_bytes()).unwrap();
        for _ in 0..3 {
            assert_eq!(hs.receive(&opt(OptionCode(99), b"")).unwrap(), Progress::NeedInput);
        }
        assert_eq!(hs.receive(&opt(OptionCode(99), b"")), Err(HandshakeError::TooManyOptions(3)));
    }

    #[test]
    fn invalid_export_is_refused_up_front() {
        let mut e = export();
        e.block_sizes.min = 3;
        assert!(ServerHandshake::new(e, HandshakeLimits::default()).is_err());
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn option_strategy() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                Just(opt(OptionCode::LIST, b"")),
                Just(opt(OptionCode::STRUCTURED_REPLY, b"")),
                Just(opt(OptionCode::INFO, &encode_info_request(b"lun0", &[InfoType::BLOCK_SIZE]).unwrap())),
                Just(opt(OptionCode::INFO, &encode_info_request(b"zzz", &[]).unwrap())),
                (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..40))
                    .prop_map(|(code, data)| opt(OptionCode(code.max(12)), &data)),
                proptest::collection::vec(any::<u8>(), 0..40).prop_map(|d| opt(OptionCode::GO, &d)),
            ]
        }

        /// Runs the whole input through a handshake in the given chunk sizes; returns everything the
        /// server sent and how it ended.
        fn run(input: &[u8], cuts: &[usize]) -> (Vec<u8>, Result<Progress, HandshakeError>) {
            let mut hs = start();
            let mut sent = drain(&mut hs);
            let mut rest = input;
            let mut last = Ok(Progress::NeedInput);
            let mut cuts = cuts.iter().cycle();
            while !rest.is_empty() {
                let n = (*cuts.next().unwrap()).min(rest.len());
                let (chunk, tail) = rest.split_at(n);
                rest = tail;
                last = hs.receive(chunk);
                sent.extend(drain(&mut hs));
                match &mut last {
                    Ok(Progress::NeedInput) => {}
                    Ok(Progress::Ready(n)) => {
                        // Leftover from this chunk plus everything not yet fed.
                        let mut all = n.leftover.to_vec();
                        all.extend_from_slice(rest);
                        n.leftover = all.into();
                        break;
                    }
                    _ => break,
                }
            }
            (sent, last)
        }

        proptest! {
            #[test]
            fn any_split_gives_the_same_result(
                options in proptest::collection::vec(option_strategy(), 0..6),
                end in prop_oneof![
                    Just(opt(OptionCode::GO, &encode_info_request(b"", &[]).unwrap())),
                    Just(opt(OptionCode::EXPORT_NAME, b"lun0")),
                    Just(opt(OptionCode::ABORT, b"")),
                ],
                tail in proptest::collection::vec(any::<u8>(), 0..30),
                flags in prop_oneof![Just(1u32), Just(3u32)],
                cuts in proptest::collection::vec(1usize..40, 1..8),
            ) {
                let mut input = flags.to_be_bytes().to_vec();
                for o in &options { input.extend_from_slice(o); }
                input.extend_from_slice(&end);
                input.extend_from_slice(&tail);
                let whole = run(&input, &[usize::MAX]);
                let split = run(&input, &cuts);
                prop_assert_eq!(&whole, &split);
                prop_assert!(!matches!(whole.1, Ok(Progress::NeedInput)));
            }

            #[test]
            fn arbitrary_bytes_never_panic_and_stay_bounded(
                input in proptest::collection::vec(any::<u8>(), 0..512),
                cuts in proptest::collection::vec(1usize..64, 1..8),
            ) {
                let (_, last) = run(&input, &cuts);
                let _ = last;
            }
        }
    }
}
