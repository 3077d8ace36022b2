//! The decisions of an iPXE-like HTTP client fetching one file, without
//! sockets or a clock: which request to send (a `Range` resume after a broken
//! transfer, guarded by `If-Range` on the strong ETag), whether a response is
//! acceptable, and whether the received bytes are the file (length,
//! blake3 against a blake3 ETag, blake3 against an expected digest). The
//! shell in `driver::http` moves the bytes with hyper and owns the timers.

/// Client behaviour.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Failed attempts (connection errors, timeouts, 5xx, truncated bodies)
    /// tolerated before the boot fails; `0` = the first failure is final.
    pub retries: u32,
    /// Resume a broken transfer with `Range` (otherwise start over).
    pub resume: bool,
    /// Expected blake3 of the content (lowercase hex).
    pub expect_blake3: Option<String>,
}

/// The request to send next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Absolute path (`/name`).
    pub path: String,
    /// `Range: bytes=N-` to resume from N.
    pub range_from: Option<u64>,
    /// `If-Range` value (the quoted strong ETag), sent with `range_from`.
    pub if_range: Option<String>,
}

/// What a failure means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Worth another attempt (the shell calls [`Get::retry`]).
    Transient(String),
    /// The boot fails.
    Fatal(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transient(r) | Failure::Fatal(r) => f.write_str(r),
        }
    }
}

/// A complete, verified file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// Content bytes.
    pub bytes: u64,
    /// blake3 of the content.
    pub digest: String,
    /// The ETag was a blake3 digest and matched.
    pub etag_verified: bool,
}

/// One file's fetch, across attempts.
#[derive(Debug)]
pub struct Get {
    cfg: HttpConfig,
    path: String,
    /// Failed attempts so far.
    pub failures: u32,
    received: u64,
    total: Option<u64>,
    etag: Option<String>,
    hasher: blake3::Hasher,
    /// The last request asked for a range.
    asked_from: Option<u64>,
}

/// The blake3 digest an ETag names, if it is a strong, quoted 64-hex tag.
pub fn etag_digest(etag: &str) -> Option<String> {
    let inner = etag.strip_prefix('"')?.strip_suffix('"')?;
    (inner.len() == 64 && inner.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| inner.to_ascii_lowercase())
}

/// `bytes A-B/LEN` → (A, B, LEN).
fn content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, len) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((
        a.trim().parse().ok()?,
        b.trim().parse().ok()?,
        len.trim().parse().ok()?,
    ))
}

impl Get {
    /// Fetch `name` (with or without a leading `/`).
    pub fn new(cfg: HttpConfig, name: &str) -> Self {
        let path = if name.starts_with('/') {
            name.to_string()
        } else {
            format!("/{name}")
        };
        Get {
            cfg,
            path,
            failures: 0,
            received: 0,
            total: None,
            etag: None,
            hasher: blake3::Hasher::new(),
            asked_from: None,
        }
    }

    /// Bytes of content received so far (kept across resumed attempts).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The next request: the whole file, or the rest of it when resuming.
    pub fn plan(&mut self) -> Plan {
        let resume = self.cfg.resume && self.received > 0 && self.etag.is_some();
        if !resume {
            self.restart();
        }
        self.asked_from = resume.then_some(self.received);
        Plan {
            path: self.path.clone(),
            range_from: self.asked_from,
            if_range: if resume { self.etag.clone() } else { None },
        }
    }

    fn restart(&mut self) {
        self.received = 0;
        self.total = None;
        self.hasher = blake3::Hasher::new();
    }

    /// A response head arrived.
    pub fn on_head(
        &mut self,
        status: u16,
        content_length: Option<u64>,
        content_range_v: Option<&str>,
        etag: Option<&str>,
    ) -> Result<(), Failure> {
        let strong = etag.filter(|e| !e.starts_with("W/")).map(str::to_string);
        match status {
            200 => {
                // A full body: a fresh start even if a range was asked (the
                // server may ignore Range, or the file changed under If-Range).
                self.restart();
                self.total = content_length;
                self.etag = strong;
                Ok(())
            }
            206 => {
                let Some(from) = self.asked_from else {
                    return Err(Failure::Fatal(format!("{}: 206 to a plain GET", self.path)));
                };
                let Some((a, b, len)) = content_range_v.and_then(content_range) else {
                    return Err(Failure::Fatal(format!(
                        "{}: 206 without a usable Content-Range",
                        self.path
                    )));
                };
                if a != from || strong != self.etag || Some(len) != self.total || b + 1 != len {
                    return Err(Failure::Fatal(format!(
                        "{}: resumed range bytes {a}-{b}/{len} does not continue {from}/{:?}",
                        self.path, self.total
                    )));
                }
                Ok(())
            }
            408 | 429 | 500 | 502 | 503 | 504 => {
                Err(Failure::Transient(format!("{}: HTTP {status}", self.path)))
            }
            _ => Err(Failure::Fatal(format!("{}: HTTP {status}", self.path))),
        }
    }

    /// Body bytes arrived.
    pub fn on_data(&mut self, data: &[u8]) -> Result<(), Failure> {
        self.received += data.len() as u64;
        if let Some(t) = self.total
            && self.received > t
        {
            return Err(Failure::Fatal(format!(
                "{}: more than the {t} bytes announced",
                self.path
            )));
        }
        self.hasher.update(data);
        Ok(())
    }

    /// The body ended (cleanly, as far as the connection is concerned).
    pub fn on_end(&mut self) -> Result<Done, Failure> {
        if let Some(t) = self.total
            && self.received < t
        {
            return Err(Failure::Transient(format!(
                "{}: body ended at {} of {t} bytes",
                self.path, self.received
            )));
        }
        let digest = self.hasher.finalize().to_hex().to_string();
        let tagged = self.etag.as_deref().and_then(etag_digest);
        if let Some(t) = &tagged
            && *t != digest
        {
            return Err(Failure::Fatal(format!(
                "{}: content blake3 {digest} != ETag {t}",
                self.path
            )));
        }
        if let Some(exp) = &self.cfg.expect_blake3
            && !exp.eq_ignore_ascii_case(&digest)
        {
            return Err(Failure::Fatal(format!(
                "{}: content blake3 {digest} != expected {exp}",
                self.path
            )));
        }
        Ok(Done {
            bytes: self.received,
            digest,
            etag_verified: tagged.is_some(),
        })
    }

    /// An attempt failed with `f` (or with an I/O error / timeout the shell
    /// saw, as `Failure::Transient`): `Ok(())` to try again, the reason the
    /// boot fails otherwise.
    pub fn retry(&mut self, f: Failure) -> Result<(), String> {
        match f {
            Failure::Fatal(r) => Err(r),
            Failure::Transient(r) => {
                self.failures += 1;
                if self.failures > self.cfg.retries {
                    Err(format!("{r} (after {} attempts)", self.failures))
                } else {
                    Ok(())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cfg(retries: u32) -> HttpConfig {
        HttpConfig {
            retries,
            resume: true,
            expect_blake3: None,
        }
    }

    fn tag(data: &[u8]) -> String {
        format!("\"{}\"", blake3::hash(data).to_hex())
    }

    #[test]
    fn whole_file_checked_against_etag_and_expected_digest() {
        let data = vec![7u8; 10_000];
        let digest = blake3::hash(&data).to_hex().to_string();
        let mut c = cfg(0);
        c.expect_blake3 = Some(digest.to_uppercase());
        let mut g = Get::new(c, "kernel");
        let p = g.plan();
        assert_eq!(
            p,
            Plan {
                path: "/kernel".into(),
                range_from: None,
                if_range: None
            }
        );
        g.on_head(200, Some(10_000), None, Some(&tag(&data)))
            .unwrap();
        g.on_data(&data[..4000]).unwrap();
        g.on_data(&data[4000..]).unwrap();
        let d = g.on_end().unwrap();
        assert_eq!(d.bytes, 10_000);
        assert_eq!(d.digest, digest);
        assert!(d.etag_verified);

        // Corrupted content: the ETag catches it, and it is not retried.
        let mut g = Get::new(cfg(3), "/kernel");
        g.plan();
        g.on_head(200, Some(10_000), None, Some(&tag(&data)))
            .unwrap();
        let mut bad = data.clone();
        bad[5] ^= 1;
        g.on_data(&bad).unwrap();
        let f = g.on_end().unwrap_err();
        assert!(
            matches!(&f, Failure::Fatal(r) if r.contains("ETag")),
            "{f:?}"
        );
        assert!(g.retry(f).is_err());

        // A non-blake3 ETag is not a digest: nothing to verify against.
        assert_eq!(etag_digest("W/\"abc\""), None);
        assert_eq!(etag_digest("\"1234\""), None);
        let mut g = Get::new(cfg(0), "x");
        g.plan();
        g.on_head(200, Some(3), None, Some("\"v1\"")).unwrap();
        g.on_data(b"abc").unwrap();
        assert!(!g.on_end().unwrap().etag_verified);
    }

    #[test]
    fn truncated_body_resumes_with_range_and_if_range() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
        let etag = tag(&data);
        let mut g = Get::new(cfg(2), "initrd");
        g.plan();
        g.on_head(200, Some(50_000), None, Some(&etag)).unwrap();
        g.on_data(&data[..20_000]).unwrap();
        let f = g.on_end().unwrap_err();
        assert!(matches!(f, Failure::Transient(_)));
        g.retry(f).unwrap();
        let p = g.plan();
        assert_eq!(p.range_from, Some(20_000));
        assert_eq!(p.if_range.as_deref(), Some(etag.as_str()));
        g.on_head(
            206,
            Some(30_000),
            Some("bytes 20000-49999/50000"),
            Some(&etag),
        )
        .unwrap();
        g.on_data(&data[20_000..]).unwrap();
        let d = g.on_end().unwrap();
        assert_eq!(d.digest, blake3::hash(&data).to_hex().to_string());
        assert_eq!(g.failures, 1);

        // A 206 that does not continue where the client stopped is refused.
        let mut g = Get::new(cfg(2), "initrd");
        g.plan();
        g.on_head(200, Some(50_000), None, Some(&etag)).unwrap();
        g.on_data(&data[..100]).unwrap();
        g.retry(Failure::Transient("reset".into())).unwrap();
        g.plan();
        let f = g
            .on_head(206, Some(10), Some("bytes 0-9/50000"), Some(&etag))
            .unwrap_err();
        assert!(matches!(f, Failure::Fatal(_)));

        // The server answers the resume with the whole file: start over.
        let mut g = Get::new(cfg(2), "initrd");
        g.plan();
        g.on_head(200, Some(50_000), None, Some(&etag)).unwrap();
        g.on_data(&data[..100]).unwrap();
        g.retry(Failure::Transient("reset".into())).unwrap();
        assert_eq!(g.plan().range_from, Some(100));
        g.on_head(200, Some(50_000), None, Some(&etag)).unwrap();
        assert_eq!(g.received(), 0);
        g.on_data(&data).unwrap();
        assert_eq!(g.on_end().unwrap().bytes, 50_000);
    }

    #[test]
    fn retries_are_bounded_and_only_for_transient_failures() {
        let mut g = Get::new(cfg(2), "f");
        for _ in 0..2 {
            g.plan();
            let f = g.on_head(503, None, None, None).unwrap_err();
            g.retry(f).unwrap();
        }
        g.plan();
        let f = g.on_head(503, None, None, None).unwrap_err();
        let r = g.retry(f).unwrap_err();
        assert!(r.contains("after 3 attempts"), "{r}");

        let mut g = Get::new(cfg(5), "f");
        g.plan();
        let f = g.on_head(404, None, None, None).unwrap_err();
        assert_eq!(g.retry(f).unwrap_err(), "/f: HTTP 404");

        // Without an ETag there is no safe resume: start over.
        let mut g = Get::new(cfg(5), "f");
        g.plan();
        g.on_head(200, Some(10), None, None).unwrap();
        g.on_data(&[0; 4]).unwrap();
        g.retry(Failure::Transient("reset".into())).unwrap();
        assert_eq!(g.plan().range_from, None);
        assert_eq!(g.received(), 0);
    }
}
