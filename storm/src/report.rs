//! What a storm measured.

use std::time::Duration;

use crate::args::{StormArgs, Transport};

/// One client's result.
#[derive(Debug, Clone)]
pub struct ClientOutcome {
    /// Client index.
    pub index: usize,
    /// Time to a DHCP lease.
    pub dhcp: Option<Duration>,
    /// Time for the transfer phase (TFTP or HTTP: every file, first request
    /// to last byte).
    pub transfer: Option<Duration>,
    /// NAKs seen.
    pub naks: u32,
    /// Re-sent requests and ACKs.
    pub resends: u32,
    /// Bytes received.
    pub bytes: u64,
    /// Why the boot failed.
    pub failure: Option<String>,
}

impl ClientOutcome {
    /// A client about to fetch.
    pub fn new(index: usize, dhcp: Option<Duration>, naks: u32) -> Self {
        ClientOutcome {
            index,
            dhcp,
            transfer: None,
            naks,
            resends: 0,
            bytes: 0,
            failure: None,
        }
    }
    /// A failed client.
    pub fn failed(index: usize, reason: &str) -> Self {
        let mut o = Self::new(index, None, 0);
        o.failure = Some(reason.to_string());
        o
    }
    /// A client that only did DHCP.
    pub fn dhcp_only(index: usize, took: Duration, naks: u32) -> Self {
        Self::new(index, Some(took), naks)
    }
    /// Mark failed.
    pub fn fail(&mut self, reason: String) {
        self.failure = Some(reason);
    }
}

/// Aggregate.
#[derive(Debug)]
pub struct Report {
    clients: usize,
    transport: &'static str,
    outcomes: Vec<ClientOutcome>,
    elapsed: Duration,
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(idx).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Report {
    /// Empty report for `clients` fetching over `transport` ("tftp", "http").
    pub fn new(clients: usize, transport: &'static str) -> Self {
        Report {
            clients,
            transport,
            outcomes: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }
    /// Add a result.
    pub fn add(&mut self, o: ClientOutcome) {
        self.outcomes.push(o);
    }
    /// Record the wall time.
    pub fn finish(&mut self, elapsed: Duration) {
        self.elapsed = elapsed;
    }
    /// Every reported client's result, in the order they ended.
    pub fn outcomes(&self) -> &[ClientOutcome] {
        &self.outcomes
    }
    /// Failed boots (including clients that never reported).
    pub fn failed(&self) -> usize {
        let reported_failed = self.outcomes.iter().filter(|o| o.failure.is_some()).count();
        reported_failed + self.clients.saturating_sub(self.outcomes.len())
    }
    fn ok(&self) -> usize {
        self.clients - self.failed()
    }
    fn series(&self, f: impl Fn(&ClientOutcome) -> Option<Duration>) -> Vec<Duration> {
        self.outcomes
            .iter()
            .filter(|o| o.failure.is_none())
            .filter_map(f)
            .collect()
    }
    fn bytes(&self) -> u64 {
        self.outcomes.iter().map(|o| o.bytes).sum()
    }
    fn goodput_mbs(&self) -> f64 {
        self.bytes() as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
    /// Failure reasons with their count and one example client.
    fn reasons(&self) -> Vec<(String, usize)> {
        let mut m: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
        for o in &self.outcomes {
            if let Some(r) = &o.failure {
                let key: String = r.chars().take(80).collect();
                let e = m.entry(key).or_insert((0, o.index));
                e.0 += 1;
            }
        }
        let mut v: Vec<_> = m
            .into_iter()
            .map(|(r, (n, example))| (format!("{r} (e.g. client {example})"), n))
            .collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.1));
        v
    }

    /// One JSON object.
    pub fn json(&self) -> String {
        let mut dhcp = self.series(|o| o.dhcp);
        let mut xfer = self.series(|o| o.transfer);
        let naks: u32 = self.outcomes.iter().map(|o| o.naks).sum();
        let resends: u32 = self.outcomes.iter().map(|o| o.resends).sum();
        serde_json::json!({
            "clients": self.clients,
            "ok": self.ok(),
            "failed": self.failed(),
            "elapsed_s": self.elapsed.as_secs_f64(),
            "bytes": self.bytes(),
            "goodput_mb_s": self.goodput_mbs(),
            "dhcp_p50_ms": ms(pct(&mut dhcp, 0.5)),
            "dhcp_p99_ms": ms(pct(&mut dhcp, 0.99)),
            "dhcp_max_ms": ms(pct(&mut dhcp, 1.0)),
            "transport": self.transport,
            // The transfer phase; the tftp_* names are kept for the scripts
            // that read them and hold the HTTP figures with --transport http.
            "transfer_p50_ms": ms(pct(&mut xfer, 0.5)),
            "transfer_p99_ms": ms(pct(&mut xfer, 0.99)),
            "transfer_max_ms": ms(pct(&mut xfer, 1.0)),
            "tftp_p50_ms": ms(pct(&mut xfer, 0.5)),
            "tftp_p99_ms": ms(pct(&mut xfer, 0.99)),
            "tftp_max_ms": ms(pct(&mut xfer, 1.0)),
            "naks": naks,
            "client_resends": resends,
            "failures": self.reasons().into_iter().map(|(r, n)| serde_json::json!({"reason": r, "count": n})).collect::<Vec<_>>(),
        })
        .to_string()
    }

    /// A table for people.
    pub fn table(&self, args: &StormArgs) -> String {
        let mut dhcp = self.series(|o| o.dhcp);
        let mut xfer = self.series(|o| o.transfer);
        let naks: u32 = self.outcomes.iter().map(|o| o.naks).sum();
        let resends: u32 = self.outcomes.iter().map(|o| o.resends).sum();
        let mut s = format!(
            "storm: {} clients against {} ({}), ripple {} ms, time scale {}\n",
            self.clients,
            args.server,
            match (args.tftp_only, args.dhcp_only, args.transport) {
                (true, _, Transport::Tftp) => "TFTP only",
                (true, _, Transport::Http) => "HTTP only",
                (_, true, _) => "DHCP only",
                (_, _, Transport::Tftp) => "DHCP + TFTP",
                (_, _, Transport::Http) => "DHCP + HTTP",
            },
            args.ripple_ms,
            args.time_scale
        );
        s += &format!(
            "{:<6} {:>8} {:>10} {:>10} {:>10}\n",
            "phase", "done", "p50 ms", "p99 ms", "max ms"
        );
        if !args.tftp_only {
            s += &format!(
                "{:<6} {:>8} {:>10.1} {:>10.1} {:>10.1}\n",
                "dhcp",
                dhcp.len(),
                ms(pct(&mut dhcp, 0.5)),
                ms(pct(&mut dhcp, 0.99)),
                ms(pct(&mut dhcp, 1.0))
            );
        }
        if !args.dhcp_only {
            s += &format!(
                "{:<6} {:>8} {:>10.1} {:>10.1} {:>10.1}\n",
                self.transport,
                xfer.len(),
                ms(pct(&mut xfer, 0.5)),
                ms(pct(&mut xfer, 0.99)),
                ms(pct(&mut xfer, 1.0))
            );
        }
        s += &format!(
            "booted {} of {}, failed {}; {:.2} s; {:.1} MB received, goodput {:.1} MB/s; {} NAKs; {} client resends\n",
            self.ok(),
            self.clients,
            self.failed(),
            self.elapsed.as_secs_f64(),
            self.bytes() as f64 / 1e6,
            self.goodput_mbs(),
            naks,
            resends
        );
        for (r, n) in self.reasons().into_iter().take(5) {
            s += &format!("  {n} failed: {r}\n");
        }
        s
    }
}
