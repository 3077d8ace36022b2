//! Parsing node log datagrams: RFC 5424, RFC 3164 (BSD), and netconsole's
//! plain lines (optionally in its extended `level,seq,usec,flags;text` form).
//! Pure: no I/O. Never panics; anything unrecognised is kept as plain text.

/// Longest datagram accepted (bigger ones are truncated, not refused).
pub const MAX_LINE: usize = 8192;

/// One parsed log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Which format it was.
    pub format: Format,
    /// Facility (0–23), when a PRI was present.
    pub facility: Option<u8>,
    /// Severity (0–7), when known.
    pub severity: Option<u8>,
    /// Host name the sender gave, if any.
    pub hostname: Option<String>,
    /// Application / tag, if any.
    pub app: Option<String>,
    /// The message text.
    pub message: String,
}

/// Wire format of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RFC 5424.
    Rfc5424,
    /// RFC 3164.
    Rfc3164,
    /// netconsole extended (`level,seq,usec,flags;text`).
    NetconsoleExtended,
    /// Anything else: the whole datagram is the message.
    Plain,
}

/// Why a datagram carries no line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyslogError {
    /// Nothing but whitespace.
    #[error("empty datagram")]
    Empty,
}

fn clean(bytes: &[u8]) -> String {
    let bytes = bytes.get(..MAX_LINE).unwrap_or(bytes);
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect::<String>()
        .trim_end()
        .to_string()
}

fn nil(s: &str) -> Option<String> {
    (s != "-" && !s.is_empty()).then(|| s.to_string())
}

/// Parse a `<PRI>` prefix: value and the rest.
fn pri(s: &str) -> Option<(u8, &str)> {
    let rest = s.strip_prefix('<')?;
    let end = rest.find('>')?;
    if end == 0 || end > 3 {
        return None;
    }
    let v: u16 = rest.get(..end)?.parse().ok()?;
    if v > 191 {
        return None;
    }
    Some((u8::try_from(v).ok()?, rest.get(end + 1..)?))
}

/// Split off one space-separated field.
fn field(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start_matches(' ');
    match s.find(' ') {
        Some(i) => Some((s.get(..i)?, s.get(i + 1..)?)),
        None if !s.is_empty() => Some((s, "")),
        None => None,
    }
}

fn rfc5424(p: u8, rest: &str) -> Option<LogRecord> {
    let rest = rest.strip_prefix("1 ")?;
    let (_ts, rest) = field(rest)?;
    let (host, rest) = field(rest)?;
    let (app, rest) = field(rest)?;
    let (_procid, rest) = field(rest)?;
    let (_msgid, rest) = field(rest)?;
    // Structured data: "-" or one or more [..] groups (with escaped ']').
    let rest = rest.trim_start_matches(' ');
    let msg = if let Some(r) = rest.strip_prefix('-') {
        r
    } else if rest.starts_with('[') {
        let mut depth_end = None;
        let mut escaped = false;
        let mut in_group = false;
        let mut quoted = false;
        for (i, c) in rest.char_indices() {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') if in_group => quoted = !quoted,
                (false, '[') if !in_group => in_group = true,
                (false, ']') if in_group && !quoted => {
                    in_group = false;
                    depth_end = Some(i + 1);
                    if !rest.get(i + 1..).is_some_and(|r| r.starts_with('[')) {
                        break;
                    }
                }
                _ => {}
            }
        }
        rest.get(depth_end?..)?
    } else {
        return None;
    };
    let msg = msg.strip_prefix(' ').unwrap_or(msg);
    let msg = msg.strip_prefix('\u{feff}').unwrap_or(msg);
    Some(LogRecord {
        format: Format::Rfc5424,
        facility: Some(p >> 3),
        severity: Some(p & 7),
        hostname: nil(host),
        app: nil(app),
        message: msg.to_string(),
    })
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn rfc3164(p: u8, rest: &str) -> LogRecord {
    // "Mmm dd hh:mm:ss HOST TAG: msg" — every part optional in practice.
    let mut s = rest;
    let mut hostname = None;
    if s.len() >= 16
        && MONTHS.iter().any(|m| s.starts_with(m))
        && s.as_bytes().get(15) == Some(&b' ')
    {
        s = s.get(16..).unwrap_or("");
        if let Some((h, r)) = field(s)
            && !h.ends_with(':')
        {
            hostname = Some(h.to_string());
            s = r;
        }
    }
    let (app, message) = match s.find(": ") {
        Some(i) if i > 0 && i <= 48 && !s.get(..i).unwrap_or("").contains(' ') => {
            let tag = s.get(..i).unwrap_or("");
            let tag = tag.split('[').next().unwrap_or(tag);
            (Some(tag.to_string()), s.get(i + 2..).unwrap_or(""))
        }
        _ => (None, s),
    };
    LogRecord {
        format: Format::Rfc3164,
        facility: Some(p >> 3),
        severity: Some(p & 7),
        hostname,
        app,
        message: message.to_string(),
    }
}

/// netconsole extended: `level,seq,usec,flags;text` (level includes facility).
fn netconsole_ext(s: &str) -> Option<LogRecord> {
    let (head, text) = s.split_once(';')?;
    let mut parts = head.split(',');
    let level: u16 = parts.next()?.parse().ok()?;
    let _seq: u64 = parts.next()?.parse().ok()?;
    let _usec: u64 = parts.next()?.parse().ok()?;
    if level > 191 {
        return None;
    }
    Some(LogRecord {
        format: Format::NetconsoleExtended,
        facility: Some(u8::try_from(level >> 3).ok()?),
        severity: Some(u8::try_from(level & 7).ok()?),
        hostname: None,
        app: Some("kernel".into()),
        message: text.to_string(),
    })
}

/// Parse one datagram.
pub fn parse(datagram: &[u8]) -> Result<LogRecord, SyslogError> {
    let s = clean(datagram);
    let s = s.trim_start();
    if s.is_empty() {
        return Err(SyslogError::Empty);
    }
    if let Some((p, rest)) = pri(s) {
        if let Some(r) = rfc5424(p, rest) {
            return Ok(r);
        }
        return Ok(rfc3164(p, rest));
    }
    if let Some(r) = netconsole_ext(s) {
        return Ok(r);
    }
    Ok(LogRecord {
        format: Format::Plain,
        facility: None,
        severity: None,
        hostname: None,
        app: None,
        message: s.to_string(),
    })
}

/// A node's log line as the agent keeps and ships it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedLine {
    /// Node number (0 = unknown sender).
    pub node: u32,
    /// Boot session id ("" = none yet).
    pub boot_session: String,
    /// Receive time.
    pub unix_millis: u64,
    /// `app: message` text.
    pub text: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rfc5424_lines() {
        let r = parse(b"<34>1 2003-10-11T22:14:15.003Z n3 su - ID47 - 'su root' failed").unwrap();
        assert_eq!(r.format, Format::Rfc5424);
        assert_eq!((r.facility, r.severity), (Some(4), Some(2)));
        assert_eq!(r.hostname.as_deref(), Some("n3"));
        assert_eq!(r.app.as_deref(), Some("su"));
        assert_eq!(r.message, "'su root' failed");
        let r = parse(b"<165>1 2003-10-11T22:14:15.003Z n3 evntslog - ID47 [a@1 x=\"]\\]\"][b@2 y=\"1\"] BOM-less msg").unwrap();
        assert_eq!(r.message, "BOM-less msg");
    }

    #[test]
    fn rfc3164_lines() {
        let r =
            parse(b"<13>Nov 21 20:31:02 n7 kernel: [    0.000000] Linux version 6.1.0").unwrap();
        assert_eq!(r.format, Format::Rfc3164);
        assert_eq!(r.hostname.as_deref(), Some("n7"));
        assert_eq!(r.app.as_deref(), Some("kernel"));
        assert_eq!(r.message, "[    0.000000] Linux version 6.1.0");
        // busybox syslogd -R sends no hostname
        let r = parse(b"<14>Nov 21 20:31:02 root: rackboot probe started").unwrap();
        assert_eq!(r.app.as_deref(), Some("root"));
        assert_eq!(r.message, "rackboot probe started");
        let r = parse(b"<6>just text").unwrap();
        assert_eq!(r.message, "just text");
    }

    #[test]
    fn netconsole_lines() {
        let r = parse(b"[    1.234567] e1000: eth0 NIC Link is Up\n").unwrap();
        assert_eq!(r.format, Format::Plain);
        assert_eq!(r.message, "[    1.234567] e1000: eth0 NIC Link is Up");
        let r = parse(b"6,1234,5678901,-;e1000: eth0 up").unwrap();
        assert_eq!(r.format, Format::NetconsoleExtended);
        assert_eq!(r.severity, Some(6));
        assert_eq!(r.message, "e1000: eth0 up");
    }

    #[test]
    fn junk_never_panics() {
        for junk in [
            &b""[..],
            b"   ",
            b"<",
            b"<999>x",
            b"<1>1 ",
            b"<1>1 a b c d e [unterminated",
            b"\xff\xfe\x00",
            b"1,2;",
            b"<13>Nov 21 20:31:02",
        ] {
            let _ = parse(junk);
        }
        assert_eq!(parse(b"  \n"), Err(SyslogError::Empty));
        let big = vec![b'a'; 100_000];
        assert_eq!(parse(&big).unwrap().message.len(), MAX_LINE);
    }
}
