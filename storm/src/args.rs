//! The storm's arguments: [`StormArgs`] (the flags of `rackboot storm`,
//! derived with clap so the command line is declared next to the code that
//! reads it) and the file [`Transport`].

use std::net::Ipv4Addr;

/// How the clients fetch their files.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TFTP, as a PXE ROM (tsize probe, lockstep blocks, re-ACK timers).
    Tftp,
    /// HTTP/1.1, as iPXE: one keep-alive TCP connection per client, a GET per
    /// file (`/NAME` on --http-port), the body's blake3 checked against a
    /// blake3 ETag, retries on connection errors, silences and 5xx.
    Http,
}

impl Transport {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Transport::Tftp => "tftp",
            Transport::Http => "http",
        }
    }
}

/// Arguments of `storm`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "\
Transports:
  --transport tftp (default)  PXE ROM TFTP: tsize probe, abort, RRQ, lockstep.
  --transport http            iPXE-style HTTP/1.1: each client opens one TCP
                              connection to --server:--http-port and GETs
                              /FILE then /SECOND-FILE on it (keep-alive). A
                              request that stalls for --http-timeout-secs, a
                              dropped connection or a 5xx is retried on a new
                              connection up to --http-retries times (from the
                              start, or with Range/If-Range with --http-resume);
                              every body is checked against a blake3 ETag and
                              the first against --expect-blake3. All clients
                              share this host's address: start rackboot-agent
                              with --http-max-per-source above the client
                              count (64 by default).
  With --tftp-only (no DHCP) the transport applies to --file/--second-file;
  after DHCP it fetches the lease's boot file (a URL's path only) from the
  lease's next-server.

Example: 200 clients loading a kernel and initrd over HTTP from an agent:
  rackboot storm --server 10.0.0.1 --tftp-only --transport http \\
      --file vmlinuz --second-file initrd.img --clients 200")]
pub struct StormArgs {
    /// The agent's (or reference server's) address.
    #[arg(long)]
    pub server: Ipv4Addr,
    /// Number of emulated clients.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Delay between client power-ons (0 = all at once).
    #[arg(long, default_value_t = 0)]
    pub ripple_ms: u64,
    /// Skip DHCP: every client fetches --file straight away (over --transport).
    #[arg(long, conflicts_with = "dhcp_only")]
    pub tftp_only: bool,
    /// Only DHCP: stop once every client is bound.
    #[arg(long)]
    pub dhcp_only: bool,
    /// File to fetch with --tftp-only, or instead of the DHCP boot file when given.
    #[arg(long)]
    pub file: Option<String>,
    /// A second, larger file every client fetches after the first (e.g. a kernel).
    #[arg(long)]
    pub second_file: Option<String>,
    /// Server DHCP port.
    #[arg(long, default_value_t = 67)]
    pub dhcp_port: u16,
    /// Local DHCP client port (68 as real clients; 0 = ephemeral, for loopback tests).
    #[arg(long, default_value_t = 68)]
    pub dhcp_client_port: u16,
    /// Server TFTP port.
    #[arg(long, default_value_t = 69)]
    pub tftp_port: u16,
    /// How the files are fetched: `tftp` (PXE ROM) or `http` (iPXE-style).
    #[arg(long, value_enum, default_value = "tftp")]
    pub transport: Transport,
    /// Server HTTP port (--transport http).
    #[arg(long, default_value_t = 80)]
    pub http_port: u16,
    /// HTTP: silence (no connection, no response head, no body bytes) after
    /// which an attempt fails (seconds, before --time-scale).
    #[arg(long, default_value_t = 30)]
    pub http_timeout_secs: u64,
    /// HTTP: failed attempts per file retried before the boot fails.
    #[arg(long, default_value_t = 3)]
    pub http_retries: u32,
    /// HTTP: resume a broken transfer with Range/If-Range instead of
    /// starting it over.
    #[arg(long)]
    pub http_resume: bool,
    /// Local address for the clients' sockets (default: any).
    #[arg(long)]
    pub bind: Option<Ipv4Addr>,
    /// Spread the clients' TFTP/HTTP sockets over the host addresses of this
    /// subnet (client i uses the (i mod n)-th), as a rack of distinct
    /// machines would; the addresses must be configured on the client side.
    #[arg(long, conflicts_with = "bind")]
    pub source_range: Option<ipnet::Ipv4Net>,
    /// TFTP block size requested.
    #[arg(long, default_value_t = 1456)]
    pub blksize: u16,
    /// TFTP window size requested (1 = lockstep, as PXE ROMs).
    #[arg(long, default_value_t = 1)]
    pub windowsize: u16,
    /// Do not probe the size first.
    #[arg(long)]
    pub no_probe: bool,
    /// Send the real request from the size probe's UDP port, as some PXE
    /// ROMs do (the default: a new port, as EDK2 and iPXE do). Late packets
    /// of the probe then reach the request's port.
    #[arg(long, conflicts_with = "no_probe")]
    pub same_port: bool,
    /// Multiply every firmware timer by this (0.1 = ten times faster).
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Silence after which a client re-ACKs (ms, before --time-scale).
    #[arg(long, default_value_t = 1000)]
    pub ack_timeout_ms: u64,
    /// Re-ACKs before a client's boot fails.
    #[arg(long, default_value_t = 6)]
    pub ack_retries: u32,
    /// First MAC; client i uses it + i.
    #[arg(long, default_value = "52:54:00:00:00:00")]
    pub mac_base: String,
    /// Give up on the whole storm after this long.
    #[arg(long, default_value_t = 600)]
    pub deadline_secs: u64,
    /// Expected blake3 of the first file (checked for every client). A file
    /// named `blobs/<blake3>` (the agent's content-addressed path) is
    /// always checked against the digest in its name.
    #[arg(long)]
    pub expect_blake3: Option<String>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also flood the server with this many DHCPDISCOVERs from random MACs
    /// (a starvation attack, or a rack of unknown machines), from a socket of
    /// their own, at --flood-rate; the emulated clients power on 1 s into
    /// the flood. Their report shows whether known machines are still
    /// answered.
    #[arg(long, default_value_t = 0)]
    pub flood: u64,
    /// Flood rate (DISCOVERs per second).
    #[arg(long, default_value_t = 20_000)]
    pub flood_rate: u64,
    /// Also flood the TFTP server with this many read requests for --file
    /// (with the PXE options), each from a fresh source port and never
    /// acknowledged — the half-open transfers a broken or hostile machine
    /// leaves — at --flood-rate, from --flood-from; the emulated clients
    /// power on 1 s into the flood.
    #[arg(long, default_value_t = 0)]
    pub tftp_flood: u64,
    /// Source address of the floods (it must be configured on this side;
    /// default: --bind). Use another address than the emulated clients',
    /// as an attacker is another machine.
    #[arg(long, value_name = "IP")]
    pub flood_from: Option<Ipv4Addr>,
    /// Threads that drive the clients with --tftp-only, each a
    /// single-threaded event loop over its share of them (0 = one per
    /// CPU). Emulated clients only cost the emulator's CPU, which on a
    /// test machine competes with the server's: no work stealing between
    /// threads keeps that cost down.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// The blake3 file `k` (0: the first) of a client must have: `--expect-blake3`
/// for the first, else the digest a `blobs/<blake3>` name carries.
pub(crate) fn expected_digest(args: &StormArgs, k: usize, file: &str) -> Option<String> {
    if k == 0
        && let Some(e) = &args.expect_blake3
    {
        return Some(e.clone());
    }
    let name = file.trim_start_matches('/');
    let hex = name.strip_prefix("blobs/")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| hex.to_string())
}
