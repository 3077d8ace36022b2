//! The metrics side of the storm tests: the families the agent and the
//! coordinator must expose, a parser of the OpenMetrics (Prometheus) text
//! exposition ([`Exposition`]), and [`scrape`] (curl in a namespace).

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail, ensure};
use rackboot_tests::netns::Netns;

/// The agent's HTTP port in the metrics test.
pub(super) const AGENT_HTTP_PORT: u16 = 8080;
/// Where the coordinator serves its metrics in the metrics test (server
/// namespace).
pub(super) const COORDINATOR_METRICS: &str = "127.0.0.1:9100";
/// The agent's operator listener (`--metrics-listen`), in the server namespace.
pub(super) const AGENT_METRICS: &str = "127.0.0.1:9101";

/// Every metric family the agent exposes, with its type.
pub(super) const AGENT_FAMILIES: &[(&str, &str)] = &[
    ("rackboot_agent_dhcp_received", "counter"),
    ("rackboot_agent_dhcp_replied", "counter"),
    ("rackboot_agent_dhcp_unknown", "counter"),
    ("rackboot_agent_dhcp_provisional", "counter"),
    ("rackboot_agent_dhcp_probes", "counter"),
    ("rackboot_agent_dhcp_dropped", "counter"),
    ("rackboot_agent_tftp_datagrams_received", "counter"),
    ("rackboot_agent_tftp_datagrams_sent", "counter"),
    ("rackboot_agent_tftp_bytes_sent", "counter"),
    ("rackboot_agent_tftp_transfers_started", "counter"),
    ("rackboot_agent_tftp_transfers_completed", "counter"),
    ("rackboot_agent_tftp_transfers_failed", "counter"),
    ("rackboot_agent_tftp_option_probes", "counter"),
    ("rackboot_agent_tftp_data_packets_sent", "counter"),
    ("rackboot_agent_tftp_retransmits", "counter"),
    ("rackboot_agent_tftp_dropped", "counter"),
    ("rackboot_agent_tftp_refused", "counter"),
    ("rackboot_agent_tftp_duplicate_requests", "counter"),
    ("rackboot_agent_tftp_requests_queued", "counter"),
    ("rackboot_agent_tftp_active_transfers", "gauge"),
    ("rackboot_agent_tftp_queued_requests", "gauge"),
    ("rackboot_agent_http_requests", "counter"),
    ("rackboot_agent_http_response_bytes", "counter"),
    ("rackboot_agent_http_connections", "counter"),
    ("rackboot_agent_http_active_connections", "gauge"),
    ("rackboot_agent_syslog_received", "counter"),
    ("rackboot_agent_syslog_unknown_sender", "counter"),
    ("rackboot_agent_syslog_dropped", "counter"),
    ("rackboot_agent_log_memory_lines", "gauge"),
    ("rackboot_agent_log_spool_lines", "gauge"),
    ("rackboot_agent_log_spool_bytes", "gauge"),
    ("rackboot_agent_log_shipped_lines", "counter"),
    ("rackboot_agent_queue_depth", "gauge"),
    ("rackboot_agent_queue_capacity", "gauge"),
    ("rackboot_agent_cache_blobs", "gauge"),
    ("rackboot_agent_cache_bytes", "gauge"),
    ("rackboot_agent_cache_hits", "counter"),
    ("rackboot_agent_cache_misses", "counter"),
    ("rackboot_agent_cache_repaired_groups", "counter"),
    ("rackboot_agent_cache_evictions", "counter"),
    ("rackboot_agent_cache_max_bytes", "gauge"),
    ("rackboot_agent_view_revision", "gauge"),
    ("rackboot_agent_view_nodes", "gauge"),
    ("rackboot_agent_view_images", "gauge"),
    ("rackboot_agent_coordinator_connected", "gauge"),
    ("rackboot_agent_coordinator_session_errors", "counter"),
    ("rackboot_agent_view_updates", "counter"),
    ("rackboot_agent_view_update_age_seconds", "gauge"),
    ("rackboot_agent_boot_sessions", "counter"),
    ("rackboot_agent_boot_phase_seconds", "histogram"),
];

/// Every metric family the coordinator exposes, with its type.
pub(super) const COORDINATOR_FAMILIES: &[(&str, &str)] = &[
    ("rackboot_coordinator_raft_id", "gauge"),
    ("rackboot_coordinator_raft_term", "gauge"),
    ("rackboot_coordinator_raft_commit_index", "gauge"),
    ("rackboot_coordinator_raft_applied_index", "gauge"),
    ("rackboot_coordinator_raft_last_index", "gauge"),
    ("rackboot_coordinator_raft_leader_id", "gauge"),
    ("rackboot_coordinator_raft_is_leader", "gauge"),
    ("rackboot_coordinator_raft_members", "gauge"),
    ("rackboot_coordinator_raft_peer_match_index", "gauge"),
    ("rackboot_coordinator_raft_peer_lag", "gauge"),
    ("rackboot_coordinator_state_revision", "gauge"),
    ("rackboot_coordinator_racks", "gauge"),
    ("rackboot_coordinator_nodes", "gauge"),
    ("rackboot_coordinator_images", "gauge"),
    ("rackboot_coordinator_pending_machines", "gauge"),
    ("rackboot_coordinator_blobs_stored", "gauge"),
    ("rackboot_coordinator_blob_bytes_stored", "gauge"),
    ("rackboot_coordinator_watch_streams", "gauge"),
    ("rackboot_coordinator_proposals", "counter"),
    ("rackboot_coordinator_proposal_failures", "counter"),
    ("rackboot_coordinator_grpc_connections", "gauge"),
    ("rackboot_coordinator_grpc_connections_refused", "counter"),
    ("rackboot_coordinator_auth_denied", "counter"),
    ("rackboot_coordinator_grpc_requests", "counter"),
];

/// The agent's boot phases (`rackboot_agent_boot_phase_seconds{phase}`).
pub(super) const PHASES: &[&str] = &[
    "dhcp_offer",
    "dhcp_ack",
    "first_tftp_byte",
    "kernel_requested",
    "kernel_sent",
    "initrd_sent",
    "first_log_line",
];

/// One sample line of an exposition.
#[derive(Debug, Clone)]
pub(super) struct Sample {
    pub(super) name: String,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) value: f64,
}

/// A parsed OpenMetrics (Prometheus) text exposition.
#[derive(Debug)]
pub(super) struct Exposition {
    /// Family name → type, from the `# TYPE` lines.
    pub(super) types: BTreeMap<String, String>,
    pub(super) samples: Vec<Sample>,
    pub(super) text: String,
}

/// `{a="x",b="y\"z"}` → labels, and the rest of the line after `}`.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').context("labels must start with {")?;
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').context("label without =")?;
        let key = rest.get(..eq).context("label key")?.to_string();
        let mut chars = rest.get(eq + 1..).context("label value")?.char_indices();
        ensure!(
            chars.next().map(|(_, c)| c) == Some('"'),
            "label value of {key} is not quoted"
        );
        let mut value = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => bail!("dangling escape in label {key}"),
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.with_context(|| format!("unterminated value of label {key}"))?;
        rest = rest.get(eq + 1 + end + 1..).context("after label value")?;
        labels.insert(key, value);
    }
}

fn parse_exposition(text: &str) -> Result<Exposition> {
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    let mut eof = false;
    for line in text.lines() {
        ensure!(!eof, "a line after # EOF: {line:?}");
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.split_whitespace().collect();
            match words.as_slice() {
                ["TYPE", name, kind] => {
                    types.insert(name.to_string(), kind.to_string());
                }
                ["EOF"] => eof = true,
                _ => {}
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .with_context(|| format!("sample line without a value: {line:?}"))?;
        let name = line.get(..name_end).unwrap_or_default().to_string();
        let after = line.get(name_end..).unwrap_or_default();
        let (labels, rest) = if after.starts_with('{') {
            parse_labels(after).with_context(|| format!("in {line:?}"))?
        } else {
            (BTreeMap::new(), after)
        };
        let value = rest
            .split_whitespace()
            .next()
            .with_context(|| format!("no value in {line:?}"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .with_context(|| format!("value {v:?} in {line:?}"))?,
        };
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    ensure!(eof, "the exposition does not end with # EOF");
    Ok(Exposition {
        types,
        samples,
        text: text.to_string(),
    })
}

impl Exposition {
    /// The sum of the samples named `name` whose labels include `labels`
    /// (None when there is none).
    pub(super) fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    /// The sum of the samples named `name` whose labels satisfy `pred` (0
    /// when there is none).
    pub(super) fn sum_where(
        &self,
        name: &str,
        pred: impl Fn(&BTreeMap<String, String>) -> bool,
    ) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name && pred(&s.labels))
            .map(|s| s.value)
            .sum()
    }

    /// The agent's DHCP replies, TFTP bytes and active transfers, for
    /// progress messages (NaN where absent).
    pub(super) fn agent_progress(&self) -> String {
        let v = |name: &str| self.sum(name, &[]).unwrap_or(f64::NAN);
        format!(
            "dhcp replied {}, tftp bytes {}, active transfers {}",
            v("rackboot_agent_dhcp_replied_total"),
            v("rackboot_agent_tftp_bytes_sent_total"),
            v("rackboot_agent_tftp_active_transfers"),
        )
    }

    /// Like [`Exposition::sum`], failing (with the exposition) when absent.
    pub(super) fn value(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        self.sum(name, labels)
            .with_context(|| format!("no sample {name}{labels:?} in:\n{}", self.text))
    }

    /// Fails unless every family is declared with its type.
    pub(super) fn ensure_families(&self, families: &[(&str, &str)]) -> Result<()> {
        let missing: Vec<String> = families
            .iter()
            .filter(|(name, kind)| self.types.get(*name).map(String::as_str) != Some(*kind))
            .map(|(name, kind)| format!("{name} ({kind})"))
            .collect();
        ensure!(
            missing.is_empty(),
            "metric families missing or of another type: {}\n{}",
            missing.join(", "),
            self.text
        );
        Ok(())
    }

    /// The counter samples (`*_total`), by name and labels.
    pub(super) fn counters(&self) -> BTreeMap<String, f64> {
        self.samples
            .iter()
            .filter(|s| s.name.ends_with("_total"))
            .map(|s| (format!("{}{:?}", s.name, s.labels), s.value))
            .collect()
    }
}

/// `curl URL` in `ns`, parsed.
pub(super) fn scrape(ns: &Netns, url: &str) -> Result<Exposition> {
    let text = ns
        .run("curl", &["-sS", "--fail", "--max-time", "10", url])
        .with_context(|| format!("scraping {url}"))?;
    parse_exposition(&text).with_context(|| format!("parsing {url}:\n{text}"))
}
