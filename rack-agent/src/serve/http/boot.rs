//! One boot-port connection: HTTP/1.1 requests read with `httparse`,
//! answered in order, kept alive. Bodies of files on disk go from the file
//! to the socket with `sendfile(2)` (hyper owns its socket and can only
//! write buffers, so the boot port has its own small server; the operator
//! listener stays on axum).
//!
//! - `GET`/`HEAD` only; a request carrying a body is answered and the
//!   connection closed (nothing reads bodies here).
//! - `Content-Length` always; one range (`Range: bytes=a-b`, 64-bit
//!   offsets) gets 206, several get the whole file (RFC 9110 allows it),
//!   an unsatisfiable one 416; a range under an `If-Range` naming another
//!   entity tag gets the whole file; `If-None-Match` gets 304.
//! - A request head is at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`]
//!   headers (431 otherwise); a malformed one gets 400 and the connection
//!   closes.
//! - A verified blob is checked between `sendfile` calls: if its file
//!   changes on disk mid-body the connection is cut (the client sees a
//!   short body and retries), never fed unverified bytes. A request for a
//!   blob of the rack's view that is not served yet (being fetched, or
//!   verified at start or again after a change on disk) waits for the file
//!   table to serve it (at most [`NOT_READY_WAIT`], time not held against the
//!   client's budget), then gets it, or 503.

use std::net::{IpAddr, SocketAddr};

use bytes::{Buf, BytesMut};
use rackboot_agent_domain::timeline::Transport;
use rackboot_tftp_core::SafePath;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::door::Conn;
use super::{Ctx, Reply, boot_info_reply};
use crate::store::disk::{Served, Unavailable};

/// Longest request head read.
pub(super) const MAX_HEAD: usize = 8 << 10;
/// Most headers in a request.
pub(super) const MAX_HEADERS: usize = 64;
/// Longest a request waits for a blob of the view that is not served yet
/// (being fetched, or verified) before it is answered 503.
pub(super) const NOT_READY_WAIT: std::time::Duration = std::time::Duration::from_secs(20);
/// Most bytes one `sendfile` call is asked for.
const SENDFILE_CHUNK: usize = 8 << 20;

/// The parts of a request the boot port uses.
#[derive(Debug)]
struct Head {
    method: Method,
    /// Path, without the query.
    path: String,
    query: Option<String>,
    keep_alive: bool,
    has_body: bool,
    range: Option<String>,
    if_range: Option<String>,
    if_none_match: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Other,
}

enum Parsed {
    Head(Head, usize),
    Partial,
    Bad(u16, &'static str),
}

fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Bad(431, "too many request headers\n");
        }
        Err(_) => return Parsed::Bad(400, "malformed request\n"),
    };
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        _ => Method::Other,
    };
    let target = req.path.unwrap_or("/");
    // Absolute form (`http://host/path`) as a proxy-minded client sends it.
    let target = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    let version = req.version.unwrap_or(0);
    let mut connection: Option<String> = None;
    let mut has_body = false;
    let mut range = None;
    let mut if_range = None;
    let mut if_none_match = None;
    for h in req.headers.iter() {
        let value = || String::from_utf8_lossy(h.value).into_owned();
        if h.name.eq_ignore_ascii_case("connection") {
            connection = Some(value().to_ascii_lowercase());
        } else if h.name.eq_ignore_ascii_case("content-length") {
            has_body |= value().trim() != "0";
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            has_body = true;
        } else if h.name.eq_ignore_ascii_case("range") {
            range = Some(value());
        } else if h.name.eq_ignore_ascii_case("if-range") {
            if_range = Some(value());
        } else if h.name.eq_ignore_ascii_case("if-none-match") {
            if_none_match = Some(value());
        }
    }
    let keep_alive = match connection.as_deref() {
        Some(c) if c.contains("close") => false,
        Some(c) if c.contains("keep-alive") => true,
        _ => version >= 1,
    };
    Parsed::Head(
        Head {
            method,
            path,
            query,
            keep_alive,
            has_body,
            range,
            if_range,
            if_none_match,
        },
        n,
    )
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// A response's head: status line and headers.
fn head_bytes(status: u16, headers: &[(&str, String)], keep_alive: bool) -> Vec<u8> {
    let mut h = format!(
        "HTTP/1.1 {status} {}\r\nServer: rackboot-agent\r\n",
        reason(status)
    );
    for (name, value) in headers {
        h.push_str(name);
        h.push_str(": ");
        h.push_str(value);
        h.push_str("\r\n");
    }
    if !keep_alive {
        h.push_str("Connection: close\r\n");
    }
    h.push_str("\r\n");
    h.into_bytes()
}

/// What a request is answered with.
enum Answer {
    /// A short generated answer.
    Reply(Reply),
    /// A file, or a range of it.
    Body {
        status: u16,
        served: Served,
        start: u64,
        len: u64,
        headers: Vec<(&'static str, String)>,
        /// Path served (for the node's boot timeline).
        path: String,
        from_start: bool,
        to_end: bool,
    },
    /// Headers only (304, 416).
    Empty {
        status: u16,
        headers: Vec<(&'static str, String)>,
    },
    /// The path's blob is not served yet: being fetched, or verified (at
    /// start, or again after a change on disk).
    NotReady(String),
}

fn plain(status: u16, body: impl Into<String>) -> Reply {
    Reply {
        status,
        content_type: "text/plain; charset=utf-8",
        body: body.into(),
    }
}

fn text(status: u16, body: impl Into<String>) -> Answer {
    Answer::Reply(plain(status, body))
}

fn answer(ctx: &Ctx, peer: IpAddr, head: &Head) -> Answer {
    if head.method == Method::Other {
        return text(405, "read-only\n");
    }
    if head.path == "/boot-info" || head.path == "/boot-info.env" {
        let mut mac = None;
        let mut format = None;
        for (k, v) in form_urlencoded::parse(head.query.as_deref().unwrap_or("").as_bytes()) {
            match &*k {
                "mac" => mac = Some(v.into_owned()),
                "format" => format = Some(v.into_owned()),
                _ => {}
            }
        }
        let env = head.path.ends_with(".env");
        return Answer::Reply(boot_info_reply(ctx, peer, mac, format, env));
    }
    let path = match SafePath::parse(&head.path) {
        Ok(p) => p,
        Err(e) => return text(400, format!("path: {e}\n")),
    };
    let table = ctx.files.borrow().clone();
    let Some(body) = table.get_for(path.as_str(), peer) else {
        if table.is_pending(path.as_str()) {
            return Answer::NotReady(path.as_str().to_string());
        }
        return text(404, format!("{} not found\n", path.as_str()));
    };
    let served = match body.open() {
        Ok(s) => s,
        Err(Unavailable::Changed) => return Answer::NotReady(path.as_str().to_string()),
        Err(e) => {
            tracing::warn!(path = path.as_str(), error = %e, "http: not served");
            return text(503, format!("{}: {e}\n", path.as_str()));
        }
    };
    let etag = match &served {
        Served::Memory(b) => table.etag(path.as_str(), b),
        Served::File(f) => f.etag().to_string(),
    };
    let etag = format!("\"{etag}\"");
    if head
        .if_none_match
        .as_deref()
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        return Answer::Empty {
            status: 304,
            headers: vec![("ETag", etag)],
        };
    }
    let len = served.len();
    // A range asked `If-Range` another version: the whole current file.
    let range = head
        .range
        .as_deref()
        .filter(|_| head.if_range.as_deref().is_none_or(|t| t.trim() == etag));
    let (status, start, count, content_range) = match range {
        None => (200, 0, len, None),
        Some(r) => match http_range_header::parse_range_header(r).and_then(|p| p.validate(len)) {
            Ok(ranges) if ranges.len() == 1 => match ranges.first() {
                Some(range) => {
                    let (a, b) = (*range.start(), *range.end());
                    (206, a, b - a + 1, Some(format!("bytes {a}-{b}/{len}")))
                }
                None => (200, 0, len, None),
            },
            // Several ranges: the whole file (allowed by RFC 9110).
            Ok(_) => (200, 0, len, None),
            Err(_) => {
                return Answer::Empty {
                    status: 416,
                    headers: vec![("Content-Range", format!("bytes */{len}"))],
                };
            }
        },
    };
    let ctype = if path.as_str().ends_with(".ipxe") {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    };
    let mut headers = vec![
        ("Content-Type", ctype.to_string()),
        ("Content-Length", count.to_string()),
        ("Accept-Ranges", "bytes".to_string()),
        ("ETag", etag),
    ];
    if let Some(cr) = content_range {
        headers.push(("Content-Range", cr));
    }
    Answer::Body {
        status,
        served,
        start,
        len: count,
        headers,
        path: path.as_str().to_string(),
        from_start: start == 0,
        to_end: start + count == len,
    }
}

/// Serve one connection until the client closes it, an answer closes it,
/// the front door cuts it, or `shutdown` (between requests).
pub(super) async fn connection(
    mut conn: Conn,
    peer: SocketAddr,
    ctx: Ctx,
    shutdown: CancellationToken,
) {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        let head = loop {
            match parse(&buf) {
                Parsed::Head(head, n) => {
                    buf.advance(n);
                    break head;
                }
                Parsed::Bad(status, msg) => {
                    let _ = respond_reply(&mut conn, &ctx, &plain(status, msg), false, false).await;
                    return;
                }
                Parsed::Partial if buf.len() >= MAX_HEAD => {
                    let r = plain(431, "request head too large\n");
                    let _ = respond_reply(&mut conn, &ctx, &r, false, false).await;
                    return;
                }
                Parsed::Partial => {}
            }
            if buf.capacity() - buf.len() < 512 {
                buf.reserve(1024);
            }
            let read = tokio::select! {
                r = conn.read_buf(&mut buf) => r,
                // Idle between requests: closed at shutdown.
                () = shutdown.cancelled(), if buf.is_empty() => return,
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let keep_alive = head.keep_alive && !head.has_body && !shutdown.is_cancelled();
        let head_only = head.method == Method::Head;
        let sent = match answer_when_verified(&ctx, &mut conn, peer.ip(), &head).await {
            Answer::NotReady(path) => {
                let r = plain(
                    503,
                    format!("{path}: not ready yet (being fetched or verified); try again\n"),
                );
                respond_reply(&mut conn, &ctx, &r, keep_alive, head_only)
                    .await
                    .is_ok()
            }
            Answer::Reply(r) => respond_reply(&mut conn, &ctx, &r, keep_alive, head_only)
                .await
                .is_ok(),
            Answer::Empty { status, headers } => {
                let mut headers = headers;
                headers.push(("Content-Length", "0".to_string()));
                count(&ctx, status, 0);
                conn.write_all(&head_bytes(status, &headers, keep_alive))
                    .await
                    .is_ok()
            }
            Answer::Body {
                status,
                served,
                start,
                len,
                headers,
                path,
                from_start,
                to_end,
            } => {
                count(&ctx, status, if head_only { 0 } else { len });
                let timeline = match (&ctx.sessions, peer.ip()) {
                    (Some(s), IpAddr::V4(ip)) if !head_only => Some((s.clone(), ip)),
                    _ => None,
                };
                if let (Some((s, ip)), true) = (&timeline, from_start) {
                    s.file_served(*ip, &path, Transport::Http);
                }
                let ok = send_body(
                    &mut conn, &headers, status, &served, start, len, keep_alive, head_only,
                )
                .await;
                if let (Some((s, ip)), true, true) = (&timeline, to_end, ok) {
                    // The last byte handed to the connection completes the
                    // kernel or initrd phase of the node's boot timeline.
                    s.file_done(*ip, &path);
                }
                ok
            }
        };
        if !sent || !keep_alive {
            let _ = conn.shutdown().await;
            return;
        }
    }
}

/// [`answer`], waiting (at most [`NOT_READY_WAIT`]) while the path's blob is
/// not ready (fetched or verified): each new file table is tried. The wait is the
/// server's, not the client's: it is excused from the connection's budget.
async fn answer_when_verified(ctx: &Ctx, conn: &mut Conn, peer: IpAddr, head: &Head) -> Answer {
    let mut files = ctx.files.clone();
    files.borrow_and_update();
    let first = answer(ctx, peer, head);
    let Answer::NotReady(path) = first else {
        return first;
    };
    tracing::info!(path, "http: waiting for a blob being fetched or verified");
    if let Some(stats) = &ctx.stats {
        stats
            .not_ready_waits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let started = tokio::time::Instant::now();
    let deadline = started + NOT_READY_WAIT;
    let answered = loop {
        match tokio::time::timeout_at(deadline, files.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => break Answer::NotReady(path),
        }
        files.borrow_and_update();
        match answer(ctx, peer, head) {
            Answer::NotReady(_) => {}
            other => break other,
        }
    };
    conn.excuse(started.elapsed());
    answered
}

fn count(ctx: &Ctx, status: u16, body_bytes: u64) {
    let Some(stats) = &ctx.stats else { return };
    stats
        .response_bytes
        .fetch_add(body_bytes, std::sync::atomic::Ordering::Relaxed);
    *stats
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(status)
        .or_default() += 1;
}

async fn respond_reply(
    conn: &mut Conn,
    ctx: &Ctx,
    reply: &Reply,
    keep_alive: bool,
    head_only: bool,
) -> std::io::Result<()> {
    let headers = [
        ("Content-Type", reply.content_type.to_string()),
        ("Content-Length", reply.body.len().to_string()),
    ];
    let body_bytes = if head_only {
        0
    } else {
        reply.body.len() as u64
    };
    count(ctx, reply.status, body_bytes);
    let mut out = head_bytes(reply.status, &headers, keep_alive);
    if !head_only {
        out.extend_from_slice(reply.body.as_bytes());
    }
    conn.write_all(&out).await
}

/// Write the head and `len` bytes of `served` from `start`; false when the
/// connection must close (an error, or a file that changed under it).
#[allow(clippy::too_many_arguments)]
async fn send_body(
    conn: &mut Conn,
    headers: &[(&str, String)],
    status: u16,
    served: &Served,
    start: u64,
    len: u64,
    keep_alive: bool,
    head_only: bool,
) -> bool {
    let head = head_bytes(status, headers, keep_alive);
    if head_only {
        return conn.write_all(&head).await.is_ok();
    }
    match served {
        Served::Memory(b) => {
            let (Ok(a), Ok(n)) = (usize::try_from(start), usize::try_from(len)) else {
                return false;
            };
            let Some(slice) = b.get(a..a.saturating_add(n)) else {
                return false;
            };
            if conn.write_all(&head).await.is_err() {
                return false;
            }
            conn.write_all(slice).await.is_ok()
        }
        Served::File(f) => {
            if conn.write_all(&head).await.is_err() || conn.flush().await.is_err() {
                return false;
            }
            let mut offset = start;
            let end = start + len;
            while offset < end {
                if !f.intact() {
                    tracing::warn!(
                        etag = f.etag(),
                        "cached blob changed on disk during a response; connection cut"
                    );
                    return false;
                }
                let want = usize::try_from((end - offset).min(SENDFILE_CHUNK as u64))
                    .unwrap_or(SENDFILE_CHUNK);
                match conn.send_file(f.fd(), &mut offset, want).await {
                    Ok(0) => {
                        // The file is shorter than it was at open.
                        tracing::warn!(
                            etag = f.etag(),
                            "file shrank during a response; connection cut"
                        );
                        return false;
                    }
                    Ok(_) => {}
                    Err(_) => return false,
                }
            }
            true
        }
    }
}
