//! The HTTP driver: one client's files fetched as iPXE does, over one
//! keep-alive HTTP/1.1 connection (hyper), a GET per file, a new
//! connection only after a failure. `http_client::Get` decides what to
//! request and whether the answer is the file; this module owns the
//! connection, the idle timeout and the pause between attempts.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::args::StormArgs;
use crate::http_client;
use crate::report::ClientOutcome;

type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// One client's HTTP phase: every file over one keep-alive connection (a new
/// one only after a failure), as iPXE loads a kernel and initrd.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn http_boot(
    args: &StormArgs,
    i: usize,
    files: &[String],
    server_ip: Ipv4Addr,
    dhcp_time: Option<Duration>,
    naks: u32,
    bind_ip: Ipv4Addr,
    deadline: Instant,
) -> ClientOutcome {
    let server = SocketAddr::V4(SocketAddrV4::new(server_ip, args.http_port));
    let idle = Duration::from_secs_f64(args.http_timeout_secs as f64 * args.time_scale);
    let mut outcome = ClientOutcome::new(i, dhcp_time, naks);
    let t_start = Instant::now();
    let mut conn: Option<Sender> = None;
    for (k, file) in files.iter().enumerate() {
        // A boot file from DHCP may be a URL: keep its path.
        let name = file
            .parse::<http::Uri>()
            .ok()
            .filter(|u| u.scheme().is_some())
            .map_or_else(|| file.clone(), |u| u.path().to_string());
        let cfg = http_client::HttpConfig {
            retries: args.http_retries,
            resume: args.http_resume,
            expect_blake3: crate::args::expected_digest(args, k, &name),
        };
        let mut get = http_client::Get::new(cfg, &name);
        let result = loop {
            let attempt = http_attempt(&mut get, &mut conn, server, bind_ip, idle, deadline).await;
            match attempt {
                Ok(done) => break Ok(done),
                Err(f) => {
                    // After any failure the connection's state is unknown.
                    conn = None;
                    if let Err(reason) = get.retry(f) {
                        break Err(reason);
                    }
                    outcome.resends += 1;
                    let pause = Duration::from_secs_f64(get.failures as f64 * args.time_scale);
                    if Instant::now() + pause >= deadline {
                        break Err(format!("{name}: storm deadline reached"));
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        };
        match result {
            Ok(done) => outcome.bytes += done.bytes,
            Err(reason) => {
                outcome.fail(reason);
                break;
            }
        }
    }
    outcome.transfer = Some(t_start.elapsed());
    outcome
}

/// `fut`, or a transient failure after `idle` or at the storm deadline.
async fn within<T, E: std::fmt::Display>(
    idle: Duration,
    deadline: Instant,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, http_client::Failure> {
    use http_client::Failure;
    let until = (Instant::now() + idle).min(deadline);
    match tokio::time::timeout_at(tokio::time::Instant::from_std(until), fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Failure::Transient(format!("{what}: {e}"))),
        Err(_) if Instant::now() >= deadline => {
            Err(Failure::Fatal(format!("{what}: storm deadline reached")))
        }
        Err(_) => Err(Failure::Transient(format!(
            "{what}: nothing for {:.1} s",
            idle.as_secs_f64()
        ))),
    }
}

/// A new HTTP/1.1 connection to `server` from `bind_ip` (any address when
/// unspecified), its connection task spawned.
async fn http_connect(server: SocketAddr, bind_ip: Ipv4Addr) -> std::io::Result<Sender> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    if !bind_ip.is_unspecified() {
        sock.bind(SocketAddr::from((bind_ip, 0)))?;
    }
    let stream = sock.connect(server).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
    // Ends when the sender is dropped or the server closes.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One request for `get`, on the kept connection or a new one.
async fn http_attempt(
    get: &mut http_client::Get,
    conn: &mut Option<Sender>,
    server: SocketAddr,
    bind_ip: Ipv4Addr,
    idle: Duration,
    deadline: Instant,
) -> Result<http_client::Done, http_client::Failure> {
    use http::header;
    use http_body_util::BodyExt;
    let plan = get.plan();
    let what = plan.path.clone();
    let sender = match conn {
        Some(s) if !s.is_closed() => s,
        _ => conn.insert(
            within(
                idle,
                deadline,
                &format!("{what}: connect"),
                http_connect(server, bind_ip),
            )
            .await?,
        ),
    };
    within(idle, deadline, &what, sender.ready()).await?;
    let mut req = http::Request::builder()
        .method(http::Method::GET)
        .uri(&plan.path)
        .header(header::HOST, server.to_string())
        .header(header::USER_AGENT, "rackboot-storm (iPXE-like)");
    if let Some(from) = plan.range_from {
        req = req.header(header::RANGE, format!("bytes={from}-"));
    }
    if let Some(tag) = &plan.if_range {
        req = req.header(header::IF_RANGE, tag);
    }
    let req = req
        .body(http_body_util::Empty::new())
        .map_err(|e| http_client::Failure::Fatal(format!("{what}: {e}")))?;
    let resp = within(idle, deadline, &what, sender.send_request(req)).await?;
    let h = resp.headers();
    let text = |n: header::HeaderName| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let length = text(header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    let range = text(header::CONTENT_RANGE);
    let etag = text(header::ETAG);
    get.on_head(
        resp.status().as_u16(),
        length,
        range.as_deref(),
        etag.as_deref(),
    )?;
    let mut body = resp.into_body();
    // Ends with the body, at the idle timeout or the storm deadline; on_data
    // fails past the announced length.
    loop {
        let frame = within(idle, deadline, &what, async {
            Ok::<_, hyper::Error>(body.frame().await)
        })
        .await?;
        match frame {
            None => break,
            Some(Err(e)) => {
                return Err(http_client::Failure::Transient(format!(
                    "{what}: {e} after {} bytes",
                    get.received()
                )));
            }
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    get.on_data(&data)?;
                }
            }
        }
    }
    get.on_end()
}
