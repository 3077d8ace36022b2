//! TFTP packet codec (RFC 1350, RFC 2347 OACK).
//!
//! [`Packet::parse`] accepts any byte slice and never panics: every way a
//! datagram can be malformed is a [`PacketError`] variant. Text fields
//! (file name, mode, option names and values) must be printable ASCII and are
//! bounded in length, so anything derived from them (log lines, ERROR
//! messages) is bounded too. Option names are matched case-insensitively and
//! stored in lower case; option values are kept as sent.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::mode::Mode;

/// Most options accepted in one request or OACK.
pub const MAX_OPTIONS: usize = 32;
/// Longest file name accepted in a request, in bytes.
pub const MAX_FILENAME_LEN: usize = 512;
/// Longest mode name accepted, in bytes.
pub const MAX_MODE_LEN: usize = 32;
/// Longest option name or value accepted, in bytes.
pub const MAX_OPTION_LEN: usize = 64;

const OP_RRQ: u16 = 1;
const OP_WRQ: u16 = 2;
const OP_DATA: u16 = 3;
const OP_ACK: u16 = 4;
const OP_ERROR: u16 = 5;
const OP_OACK: u16 = 6;

/// One option of a request or OACK, as on the wire (name in lower case).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RawOption {
    /// Option name, lower case (`blksize`, `tsize`, …).
    pub name: String,
    /// Option value as sent (decimal digits for every option we know).
    pub value: String,
}

impl RawOption {
    /// Builds an option; the name is lower-cased.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> RawOption {
        RawOption {
            name: name.into().to_ascii_lowercase(),
            value: value.into(),
        }
    }
}

/// A TFTP packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// Read request (opcode 1).
    Rrq {
        /// Requested file name, unvalidated (see [`crate::SafePath`]).
        filename: String,
        /// Transfer mode.
        mode: Mode,
        /// Requested options, in the order sent.
        options: Vec<RawOption>,
    },
    /// Write request (opcode 2); always refused by this server.
    Wrq {
        /// Requested file name.
        filename: String,
        /// Transfer mode.
        mode: Mode,
        /// Requested options, in the order sent.
        options: Vec<RawOption>,
    },
    /// A data block (opcode 3). Block numbers wrap at 65535 → 0.
    Data {
        /// Block number as on the wire.
        block: u16,
        /// Block content; shorter than the block size only in the last block.
        data: Bytes,
    },
    /// Acknowledgement (opcode 4).
    Ack {
        /// Acknowledged block number as on the wire; 0 acknowledges an OACK.
        block: u16,
    },
    /// Error (opcode 5); ends the transfer.
    Error {
        /// Error code.
        code: ErrorCode,
        /// Human-readable message.
        msg: String,
    },
    /// Option acknowledgement (opcode 6, RFC 2347).
    Oack {
        /// Accepted options, with the server's values.
        options: Vec<RawOption>,
    },
}

/// TFTP error codes (RFC 1350, plus 8 from RFC 2347).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 0: not defined, see the message.
    NotDefined,
    /// 1: file not found.
    FileNotFound,
    /// 2: access violation.
    AccessViolation,
    /// 3: disk full or allocation exceeded.
    DiskFull,
    /// 4: illegal TFTP operation.
    IllegalOperation,
    /// 5: unknown transfer ID.
    UnknownTransferId,
    /// 6: file already exists.
    FileExists,
    /// 7: no such user.
    NoSuchUser,
    /// 8: option negotiation refused; clients also use it to abort after
    /// reading `tsize` from an OACK.
    OptionRefused,
    /// Any other code (never one of 0..=8).
    Other(u16),
}

impl ErrorCode {
    /// The code for a wire value.
    pub fn from_u16(code: u16) -> ErrorCode {
        match code {
            0 => ErrorCode::NotDefined,
            1 => ErrorCode::FileNotFound,
            2 => ErrorCode::AccessViolation,
            3 => ErrorCode::DiskFull,
            4 => ErrorCode::IllegalOperation,
            5 => ErrorCode::UnknownTransferId,
            6 => ErrorCode::FileExists,
            7 => ErrorCode::NoSuchUser,
            8 => ErrorCode::OptionRefused,
            other => ErrorCode::Other(other),
        }
    }

    /// The wire value.
    pub fn as_u16(self) -> u16 {
        match self {
            ErrorCode::NotDefined => 0,
            ErrorCode::FileNotFound => 1,
            ErrorCode::AccessViolation => 2,
            ErrorCode::DiskFull => 3,
            ErrorCode::IllegalOperation => 4,
            ErrorCode::UnknownTransferId => 5,
            ErrorCode::FileExists => 6,
            ErrorCode::NoSuchUser => 7,
            ErrorCode::OptionRefused => 8,
            ErrorCode::Other(code) => code,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_u16())
    }
}

/// A field of a packet, named in [`PacketError`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// The file name of a request.
    Filename,
    /// The mode of a request.
    Mode,
    /// An option name.
    OptionName,
    /// An option value.
    OptionValue,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Filename => "file name",
            Field::Mode => "mode",
            Field::OptionName => "option name",
            Field::OptionValue => "option value",
        })
    }
}

/// Why a datagram is not a valid TFTP packet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// The datagram ends before the fixed part of its packet type.
    #[error("truncated packet: {len} bytes is too short for {what}")]
    Truncated {
        /// Datagram length.
        len: usize,
        /// What could not be read.
        what: &'static str,
    },
    /// The opcode is not 1..=6.
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    /// A string field has no terminating NUL.
    #[error("{0} is not NUL-terminated")]
    MissingNul(Field),
    /// A text field holds a byte that is not printable ASCII (this covers
    /// non-UTF-8, non-ASCII and control characters).
    #[error("{field} has invalid byte {byte:#04x} at offset {offset}")]
    InvalidText {
        /// The field.
        field: Field,
        /// Offset of the byte within the field.
        offset: usize,
        /// The offending byte.
        byte: u8,
    },
    /// A text field is longer than its limit.
    #[error("{field} is {len} bytes long, the limit is {max}")]
    TooLong {
        /// The field.
        field: Field,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The mode is not octet, netascii or mail.
    #[error("unknown transfer mode {0:?}")]
    BadMode(String),
    /// More than [`MAX_OPTIONS`] options.
    #[error("more than {max} options")]
    TooManyOptions {
        /// The limit.
        max: usize,
    },
    /// The same option (case-insensitively) appears twice.
    #[error("option {0:?} appears twice")]
    DuplicateOption(String),
    /// An option with an empty name.
    #[error("empty option name")]
    EmptyOptionName,
}

impl Packet {
    /// Parses one datagram. Never panics.
    ///
    /// Lenient where real clients are sloppy: trailing NUL padding after the
    /// options, trailing bytes after an ACK, and an ERROR message without
    /// its NUL (or with non-ASCII bytes, replaced) are all accepted.
    pub fn parse(datagram: &[u8]) -> Result<Packet, PacketError> {
        let (opcode, body) = match datagram {
            [hi, lo, body @ ..] => (u16::from_be_bytes([*hi, *lo]), body),
            _ => {
                return Err(PacketError::Truncated {
                    len: datagram.len(),
                    what: "an opcode",
                });
            }
        };
        match opcode {
            OP_RRQ | OP_WRQ => {
                let (filename, mode, options) = parse_request(body)?;
                Ok(if opcode == OP_RRQ {
                    Packet::Rrq {
                        filename,
                        mode,
                        options,
                    }
                } else {
                    Packet::Wrq {
                        filename,
                        mode,
                        options,
                    }
                })
            }
            OP_DATA => {
                let (block, data) = split_u16(datagram.len(), body, "a DATA block number")?;
                Ok(Packet::Data {
                    block,
                    data: Bytes::copy_from_slice(data),
                })
            }
            OP_ACK => {
                let (block, _padding) = split_u16(datagram.len(), body, "an ACK block number")?;
                Ok(Packet::Ack { block })
            }
            OP_ERROR => {
                let (code, rest) = split_u16(datagram.len(), body, "an ERROR code")?;
                let msg_bytes = rest.split(|&b| b == 0).next().unwrap_or_default();
                let msg = String::from_utf8_lossy(msg_bytes).into_owned();
                Ok(Packet::Error {
                    code: ErrorCode::from_u16(code),
                    msg,
                })
            }
            OP_OACK => Ok(Packet::Oack {
                options: parse_options(body)?,
            }),
            other => Err(PacketError::UnknownOpcode(other)),
        }
    }

    /// Encodes the packet into a new buffer.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode_into(&mut buf);
        buf.freeze()
    }

    /// Appends the encoded packet to `buf`. NUL bytes inside text fields
    /// (which [`Packet::parse`] never produces) are left out so the result
    /// always parses back.
    pub fn encode_into<B: BufMut>(&self, buf: &mut B) {
        match self {
            Packet::Rrq {
                filename,
                mode,
                options,
            } => encode_request(buf, OP_RRQ, filename, *mode, options),
            Packet::Wrq {
                filename,
                mode,
                options,
            } => encode_request(buf, OP_WRQ, filename, *mode, options),
            Packet::Data { block, data } => {
                buf.put_u16(OP_DATA);
                buf.put_u16(*block);
                buf.put_slice(data);
            }
            Packet::Ack { block } => {
                buf.put_u16(OP_ACK);
                buf.put_u16(*block);
            }
            Packet::Error { code, msg } => {
                buf.put_u16(OP_ERROR);
                buf.put_u16(code.as_u16());
                put_cstr(buf, msg);
            }
            Packet::Oack { options } => {
                buf.put_u16(OP_OACK);
                put_options(buf, options);
            }
        }
    }

    /// Length of the encoded packet, in bytes.
    pub fn encoded_len(&self) -> usize {
        let options_len = |options: &[RawOption]| -> usize {
            options
                .iter()
                .map(|o| o.name.len() + o.value.len() + 2)
                .sum()
        };
        match self {
            Packet::Rrq {
                filename,
                mode,
                options,
            }
            | Packet::Wrq {
                filename,
                mode,
                options,
            } => 2 + filename.len() + 1 + mode.as_str().len() + 1 + options_len(options),
            Packet::Data { data, .. } => 4 + data.len(),
            Packet::Ack { .. } => 4,
            Packet::Error { msg, .. } => 4 + msg.len() + 1,
            Packet::Oack { options } => 2 + options_len(options),
        }
    }
}

fn split_u16<'a>(
    len: usize,
    body: &'a [u8],
    what: &'static str,
) -> Result<(u16, &'a [u8]), PacketError> {
    match body {
        [hi, lo, rest @ ..] => Ok((u16::from_be_bytes([*hi, *lo]), rest)),
        _ => Err(PacketError::Truncated { len, what }),
    }
}

fn parse_request(mut body: &[u8]) -> Result<(String, Mode, Vec<RawOption>), PacketError> {
    let filename = text(
        take_cstr(&mut body, Field::Filename)?,
        Field::Filename,
        MAX_FILENAME_LEN,
    )?;
    let mode_name = text(
        take_cstr(&mut body, Field::Mode)?,
        Field::Mode,
        MAX_MODE_LEN,
    )?;
    let mode = Mode::from_name(&mode_name).ok_or(PacketError::BadMode(mode_name))?;
    let options = parse_options(body)?;
    Ok((filename, mode, options))
}

fn parse_options(mut body: &[u8]) -> Result<Vec<RawOption>, PacketError> {
    let mut options: Vec<RawOption> = Vec::new();
    loop {
        match body.first() {
            None => break,
            // Trailing NUL padding, seen from some PXE ROMs.
            Some(0) if body.iter().all(|&b| b == 0) => break,
            Some(_) => {}
        }
        let name = take_cstr(&mut body, Field::OptionName)?;
        if name.is_empty() {
            return Err(PacketError::EmptyOptionName);
        }
        let name = text(name, Field::OptionName, MAX_OPTION_LEN)?.to_ascii_lowercase();
        let value = text(
            take_cstr(&mut body, Field::OptionValue)?,
            Field::OptionValue,
            MAX_OPTION_LEN,
        )?;
        if options.len() >= MAX_OPTIONS {
            return Err(PacketError::TooManyOptions { max: MAX_OPTIONS });
        }
        if options.iter().any(|o| o.name == name) {
            return Err(PacketError::DuplicateOption(name));
        }
        options.push(RawOption { name, value });
    }
    Ok(options)
}

/// Splits off a NUL-terminated string (without its NUL).
fn take_cstr<'a>(body: &mut &'a [u8], field: Field) -> Result<&'a [u8], PacketError> {
    let pos = body
        .iter()
        .position(|&b| b == 0)
        .ok_or(PacketError::MissingNul(field))?;
    let (s, rest) = body.split_at(pos);
    *body = rest.get(1..).unwrap_or_default();
    Ok(s)
}

/// Validates a printable-ASCII text field.
fn text(bytes: &[u8], field: Field, max: usize) -> Result<String, PacketError> {
    if bytes.len() > max {
        return Err(PacketError::TooLong {
            field,
            len: bytes.len(),
            max,
        });
    }
    if let Some((offset, &byte)) = bytes
        .iter()
        .enumerate()
        .find(|(_, b)| !(0x20..0x7f).contains(*b))
    {
        return Err(PacketError::InvalidText {
            field,
            offset,
            byte,
        });
    }
    Ok(bytes.iter().map(|&b| char::from(b)).collect())
}

fn encode_request<B: BufMut>(
    buf: &mut B,
    opcode: u16,
    filename: &str,
    mode: Mode,
    options: &[RawOption],
) {
    buf.put_u16(opcode);
    put_cstr(buf, filename);
    put_cstr(buf, mode.as_str());
    put_options(buf, options);
}

fn put_options<B: BufMut>(buf: &mut B, options: &[RawOption]) {
    for option in options {
        put_cstr(buf, &option.name);
        put_cstr(buf, &option.value);
    }
}

fn put_cstr<B: BufMut>(buf: &mut B, s: &str) {
    for &b in s.as_bytes() {
        if b != 0 {
            buf.put_u8(b);
        }
    }
    buf.put_u8(0);
}
