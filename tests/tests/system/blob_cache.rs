//! The agent's blob cache, with a real coordinator and agent in
//! network namespaces (root; no QEMU):
//!
//! - under corruption: bit flips in 100 cached files on disk are all
//!   detected when the agent loads them (each 1 MiB group against the
//!   blob's outboard), the bad groups are fetched again from the
//!   coordinator, and every byte the agent then serves over TFTP matches the
//!   pushed content: 0 corrupt bytes reach a client; `rackboot rack cache`
//!   reports the 100 repaired groups;
//! - under its size bound: the least recently assigned blobs are evicted, a
//!   blob assigned to the rack never is, and `rackboot rack cache` shows
//!   what is held and what is missing.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use rackboot_tests::daemon::run_with_timeout;
use rackboot_tests::tftplab::{RACK, SERVER_IP, TftpLab, blake3_hex, random_bytes};
use rackboot_tests::{require_commands_or_skip, require_root_or_skip};

/// Images pushed (a kernel and an initrd each: 2 blobs per image).
const IMAGES: usize = 50;

/// Files in the agent's cache whose content hashes to their name.
fn intact_cache_files(lab: &TftpLab) -> Result<(usize, usize)> {
    let dir = lab.agent_data().join("cache");
    let (mut intact, mut total) = (0, 0);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        // Not created yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        // The agent removes a corrupt file (and renames a fetched one into
        // place) while this scan runs: a vanished file is simply not intact.
        let data = match std::fs::read(e.path()) {
            Ok(d) => d,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err).with_context(|| format!("reading {}", e.path().display())),
        };
        total += 1;
        if blake3_hex(&data) == name {
            intact += 1;
        }
    }
    Ok((intact, total))
}

/// `rackboot image push NAME` of these bytes (kernel release 6.1.0-test).
fn push_image(lab: &TftpLab, name: &str, kernel: &[u8], initrd: &[u8]) -> Result<()> {
    let k = lab.add_file(&format!("{name}.kernel"), kernel)?;
    let r = lab.add_file(&format!("{name}.initrd"), initrd)?;
    lab.cli(&[
        "image",
        "push",
        name,
        "--kernel",
        &k.display().to_string(),
        "--initrd",
        &r.display().to_string(),
        "--kernel-version",
        "6.1.0-test",
    ])?
    .success()?;
    Ok(())
}

#[test]
fn bit_flips_in_100_cached_files_never_reach_a_client() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip", "curl"], Ok(()));
    let mut lab = TftpLab::new("rbbc")?;
    lab.start_coordinator()?;
    lab.start_agent()?;

    // 50 nodes, each assigned its own image: 100 distinct blobs in the rack view.
    let macs: Vec<String> = (0..IMAGES)
        .map(|i| format!("52:54:00:bc:00:{i:02x}"))
        .collect();
    let mut add = vec!["node", "add", "--rack", RACK];
    for m in &macs {
        add.extend(["--mac", m.as_str()]);
    }
    lab.cli(&add)?.success()?;
    let mut expected = Vec::new();
    for i in 0..IMAGES {
        let kernel = random_bytes(&format!("bc-kernel-{i}"), 20_000 + i * 997);
        let initrd = random_bytes(&format!("bc-initrd-{i}"), 30_000 + i * 1_013);
        let name = format!("bc:{i}");
        push_image(&lab, &name, &kernel, &initrd)?;
        lab.cli(&["assign", "--node", &(i + 1).to_string(), &name])?
            .success()?;
        expected.push(blake3_hex(&kernel));
        expected.push(blake3_hex(&initrd));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (intact, total) = intact_cache_files(&lab)?;
        if intact >= 2 * IMAGES {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the agent cached {intact}/{total} of {} blobs in 60 s",
            2 * IMAGES
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // Flip one bit in every cached blob file while the agent is down.
    lab.stop_agent()?;
    let dir = lab.agent_data().join("cache");
    let mut flipped = 0;
    for (n, hash) in expected.iter().enumerate() {
        let path = dir.join(hash);
        let mut data = std::fs::read(&path)?;
        let at = (n * 7919) % data.len();
        if let Some(b) = data.get_mut(at) {
            *b ^= 1 << (n % 8);
        }
        std::fs::write(&path, &data)?;
        flipped += 1;
    }
    ensure!(flipped == 100, "flipped {flipped} files");
    ensure!(
        intact_cache_files(&lab)?.0 == 0,
        "every file should now be corrupt"
    );

    lab.start_agent()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (intact, _) = intact_cache_files(&lab)?;
        if intact >= 2 * IMAGES {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "only {intact} blobs fetched again after 60 s:\n{}",
            lab.agent_log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let log = lab.agent_log();
    // Each corrupt file named in a detection (the agent checks at load and
    // again before repairing, so a file may be named twice).
    let detected = expected
        .iter()
        .filter(|h| {
            log.lines()
                .any(|l| l.contains("cached blob corrupt") && l.contains(h.as_str()))
        })
        .count();
    ensure!(
        detected == 100,
        "every corrupt file must be detected at load ({detected} of 100 logged):\n{}",
        log.lines()
            .filter(|l| l.contains("corrupt") || l.contains("WARN"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Every blob the agent serves is the pushed content.
    let got = lab.dir().join("got");
    let mut corrupt = 0;
    for hash in &expected {
        let _ = std::fs::remove_file(&got);
        let mut curl = lab.client.exec("curl");
        curl.args(["-s", "-o"])
            .arg(&got)
            .arg(format!("tftp://{SERVER_IP}/blobs/{hash}"));
        let out = run_with_timeout(curl, Duration::from_secs(20))?;
        ensure!(out.status.success(), "fetching blobs/{hash}:\n{out}");
        if blake3_hex(&std::fs::read(&got)?) != *hash {
            corrupt += 1;
        }
    }
    ensure!(corrupt == 0, "{corrupt} of 100 blobs served corrupt");

    // The agent reports what it repaired and holds.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = lab.cli(&["rack", "cache", RACK])?;
        let text = out.combined();
        if out.status.success() && text.contains("100 corrupt groups refetched") {
            ensure!(
                text.matches("held ").count() >= 100 && !text.contains("MISSING"),
                "rack cache lists every blob held:\n{text}"
            );
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "rack cache never reported the repairs:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    lab.agent_mut()?.ensure_running()
}

/// Blob files in the agent's cache.
fn cached(lab: &TftpLab) -> Result<Vec<String>> {
    let dir = lab.agent_data().join("cache");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.len() == 64 {
            out.push(name);
        }
    }
    Ok(out)
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !ok()? {
        ensure!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(())
}

#[test]
fn cache_bound_evicts_least_recently_assigned_never_assigned() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip"], Ok(()));
    let mut lab = TftpLab::new("rbce")?;
    // 2 MiB bound; each image below is ~1.2 MiB.
    lab.agent_args = vec!["--cache-max-mib".into(), "2".into()];
    lab.start_coordinator()?;
    lab.start_agent()?;
    lab.cli(&["node", "add", "--rack", RACK, "--mac", "52:54:00:ce:00:01"])?
        .success()?;
    let mut blobs = Vec::new();
    for i in 0..4 {
        let kernel = random_bytes(&format!("ce-kernel-{i}"), 700_000 + i);
        let initrd = random_bytes(&format!("ce-initrd-{i}"), 500_000 + i);
        push_image(&lab, &format!("ce:{i}"), &kernel, &initrd)?;
        blobs.push([blake3_hex(&kernel), blake3_hex(&initrd)]);
    }
    // Assign images 0, 1, 2, 3 in turn; each is fetched before the next.
    for (i, pair) in blobs.iter().enumerate() {
        lab.cli(&["assign", "--node", "1", &format!("ce:{i}")])?
            .success()?;
        wait_for(
            &format!("image {i} cached"),
            Duration::from_secs(30),
            || {
                let have = cached(&lab)?;
                Ok(pair.iter().all(|h| have.contains(h)))
            },
        )?;
        std::thread::sleep(Duration::from_millis(1100));
    }
    // Under a 2 MiB bound only the assigned image and at most the one
    // before it fit: the oldest two are gone, the assigned one is there.
    wait_for("eviction to the bound", Duration::from_secs(30), || {
        let have = cached(&lab)?;
        Ok(blobs[0].iter().chain(&blobs[1]).all(|h| !have.contains(h)))
    })?;
    let have = cached(&lab)?;
    ensure!(
        blobs[3].iter().all(|h| have.contains(h)),
        "the assigned image is never evicted"
    );

    // A bound smaller than the assigned image itself: it stays anyway.
    lab.stop_agent()?;
    lab.agent_args = vec!["--cache-max-mib".into(), "1".into()];
    lab.start_agent()?;
    wait_for(
        "the agent to report its cache",
        Duration::from_secs(30),
        || {
            let out = lab.cli(&["rack", "cache", RACK])?;
            Ok(out.status.success() && out.combined().contains("1.0 MiB bound"))
        },
    )?;
    let have = cached(&lab)?;
    ensure!(
        blobs[3].iter().all(|h| have.contains(h)),
        "assigned blobs kept over the bound"
    );
    ensure!(
        blobs[2].iter().all(|h| !have.contains(h)),
        "unassigned blobs evicted: {have:?}"
    );
    let text = lab.cli(&["rack", "cache", RACK])?.success()?.combined();
    ensure!(
        text.contains("ce:3 kernel") && text.contains("ce:3 initrd") && !text.contains("MISSING"),
        "rack cache:\n{text}"
    );

    // Assigned but not yet fetched shows as missing (exit status 1): stop
    // the agent, assign image 0 again, ask.
    lab.stop_agent()?;
    lab.cli(&["assign", "--node", "1", "ce:0"])?.success()?;
    let out = lab.cli(&["rack", "cache", RACK])?;
    ensure!(
        !out.status.success() && out.combined().matches("MISSING").count() == 2,
        "rack cache must name the two missing blobs:\n{}",
        out.combined()
    );
    Ok(())
}

/// Size of the huge blob: past 4 GiB (32-bit lengths and TFTP's 65,535 ×
/// 65,464-byte ceiling both wrap or fail before it).
const HUGE: u64 = (5 << 30) + 12_345;

/// Offsets of the generated (non-zero) stretches of the huge file, each
/// 1 MiB: the start, across the 4 GiB line, and the tail.
fn huge_stretches() -> [u64; 3] {
    [0, (4 << 30) - 500_000, HUGE - (1 << 20)]
}

/// The file: sparse zeros with [`huge_stretches`] of generated bytes.
fn write_huge(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path)?;
    f.set_len(HUGE)?;
    for (i, at) in huge_stretches().into_iter().enumerate() {
        f.write_all_at(&random_bytes(&format!("huge-{i}"), 1 << 20), at)?;
    }
    f.sync_all()?;
    Ok(())
}

/// blake3 of a file, read in 1 MiB pieces.
fn blake3_of_file(path: &std::path::Path) -> Result<String> {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(path)?)?;
    Ok(h.finalize().to_hex().to_string())
}

/// A 5 GiB blob (an initrd past 4 GiB) pushes with the real CLI, is cached
/// and verified by the agent, and is served byte-exact over HTTP: the whole
/// body (blake3 at the client, streamed), `Content-Length` past 32 bits on
/// HEAD, and ranges across the 4 GiB line and at the tail equal to the
/// file's bytes. TFTP refuses it at once with an ERROR rather than
/// wrapping its block numbers through it.
///
/// Outside `.ci/run` (15 GiB of disk writes and ~75 s of both cores would
/// push CI past its time; the 512 MiB QEMU boot and the big-image bit-flip
/// test cover the same serving path there):
/// `cargo nextest run -p rackboot-tests --test system --run-ignored only -E 'test(a_5_gib)'`.
#[test]
#[ignore = "15 GiB of disk writes and ~75 s: run with --run-ignored only (see the doc comment)"]
fn a_5_gib_blob_pushes_caches_and_serves_with_ranges() -> Result<()> {
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip", "curl"], Ok(()));
    let mut lab = TftpLab::new("rbhg")?;
    lab.http_port = Some(8080);
    lab.start_coordinator()?;
    lab.start_agent()?;
    let huge = lab.dir().join("huge.initrd");
    write_huge(&huge)?;
    let digest = blake3_of_file(&huge)?;
    let kernel = lab.add_file("huge.kernel", &random_bytes("huge-kernel", 50_000))?;
    let t = Instant::now();
    lab.cli(&[
        "image",
        "push",
        "huge:1",
        "--kernel",
        &kernel.display().to_string(),
        "--initrd",
        &huge.display().to_string(),
        "--kernel-version",
        "6.1.0-test",
    ])?
    .success()?;
    let push_secs = t.elapsed().as_secs_f64();
    lab.cli(&["node", "add", "--rack", RACK, "--mac", "52:54:00:bd:00:01"])?
        .success()?;
    lab.cli(&["assign", "--node", "1", "huge:1"])?.success()?;

    // Cached and verified: the agent answers HEAD with the full length.
    let url = format!("http://{SERVER_IP}:8080/blobs/{digest}");
    let t = Instant::now();
    wait_for("the huge blob cached", Duration::from_secs(300), || {
        let mut head = lab.client.exec("curl");
        head.args(["-sSI", "--max-time", "30", &url]);
        let out = run_with_timeout(head, Duration::from_secs(40))?;
        let text = out.stdout.to_lowercase();
        Ok(text.starts_with("http/1.1 200") && text.contains(&format!("content-length: {HUGE}")))
    })?;
    let cache_secs = t.elapsed().as_secs_f64();

    // The whole body, hashed as it streams in.
    let t = Instant::now();
    let mut get = lab.client.exec("curl");
    get.args(["-sS", "--fail", "--max-time", "300", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = get.spawn()?;
    let mut out = child.stdout.take().context("curl stdout")?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    loop {
        let n = out.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got += n as u64;
        h.update(&buf[..n]);
    }
    ensure!(child.wait()?.success(), "curl of the whole blob failed");
    ensure!(got == HUGE, "got {got} bytes of {HUGE}");
    ensure!(
        h.finalize().to_hex().to_string() == digest,
        "the whole body does not hash to the blob's digest"
    );
    let get_secs = t.elapsed().as_secs_f64();

    // Ranges: across the 4 GiB line, inside the tail stretch, the last bytes.
    let src = std::fs::File::open(&huge)?;
    for (from, to) in [
        ((4u64 << 30) - 1_000, (4u64 << 30) + 999),
        (HUGE - 700_000, HUGE - 600_001),
        (HUGE - 10, HUGE - 1),
    ] {
        let part = lab.dir().join("part");
        let mut c = lab.client.exec("curl");
        c.args(["-sS", "--fail", "--max-time", "30", "-r"])
            .arg(format!("{from}-{to}"))
            .arg("-D")
            .arg(lab.dir().join("part.head"))
            .arg("-o")
            .arg(&part)
            .arg(&url);
        run_with_timeout(c, Duration::from_secs(40))?.success()?;
        let head = std::fs::read_to_string(lab.dir().join("part.head"))?.to_lowercase();
        ensure!(
            head.starts_with("http/1.1 206")
                && head.contains(&format!("content-range: bytes {from}-{to}/{HUGE}")),
            "range {from}-{to}: {head}"
        );
        let body = std::fs::read(&part)?;
        let mut want = vec![0u8; usize::try_from(to - from + 1)?];
        src.read_exact_at(&mut want, from)?;
        ensure!(
            body == want,
            "range {from}-{to}: bytes differ from the file"
        );
    }

    // TFTP cannot address it: refused at once, not wrapped.
    let t = Instant::now();
    let mut tftp = lab.client.exec("curl");
    tftp.args(["-sS", "--max-time", "20", "-o", "/dev/null"])
        .arg(format!("tftp://{SERVER_IP}/blobs/{digest}"));
    let out = run_with_timeout(tftp, Duration::from_secs(30))?;
    // curl's exit status 70: the server answered ERROR 3 (disk full or
    // allocation exceeded), which is how the agent says "too large".
    ensure!(
        out.status.code() == Some(70) && t.elapsed() < Duration::from_secs(10),
        "TFTP of a 5 GiB file should be refused at once with ERROR 3:\n{out}"
    );
    std::fs::remove_file(&huge)?;
    eprintln!(
        "a_5_gib_blob: {HUGE} bytes, push {push_secs:.1} s, agent cached+verified {cache_secs:.1} s, \
         HTTP GET+blake3 {get_secs:.1} s; TFTP refused with ERROR 3 in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    lab.agent_mut()?.ensure_running()
}

/// Fetches `path` from the agent over HTTP in the client namespace; the
/// body's blake3, or the failure.
fn http_blake3(lab: &TftpLab, path: &str) -> Result<String> {
    let mut c = lab.client.exec("curl");
    c.args(["-sS", "--fail", "--max-time", "60", "-o", "-"])
        .arg(format!("http://{SERVER_IP}:8080/{path}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = c.output()?;
    ensure!(
        out.status.success(),
        "GET {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(blake3_hex(&out.stdout))
}

/// Flips one bit in each of `groups` (1 MiB groups) of a cached file, in
/// place (same inode; its modification time changes).
fn flip_groups(path: &std::path::Path, groups: &[u64]) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    for g in groups {
        let at = g * (1 << 20) + 4_321;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at)?;
        f.write_all_at(&[b[0] ^ 0x10], at)?;
    }
    f.sync_all()?;
    Ok(())
}

/// A big image (16 MiB kernel, 96 MiB initrd) on the serving path of
/// today's agent (files on disk, `sendfile`, `pread`):
/// - bits flipped in three groups of each cached file **while the agent
///   serves**: the next requests find the files changed (stamp), the agent
///   verifies them again, finds the flipped groups, fetches them again from
///   the coordinator, and the requests that arrived meanwhile wait and then
///   get the pushed bytes (8 parallel HTTP clients, blake3 at each);
/// - bits flipped while the agent is down: detected when it starts, before
///   anything is served; clients asking at once wait and get the pushed
///   bytes (HTTP and TFTP).
#[test]
fn bit_flips_in_a_big_image_never_reach_a_client() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip", "curl"], Ok(()));
    let mut lab = TftpLab::new("rbbf")?;
    lab.http_port = Some(8080);
    lab.start_coordinator()?;
    lab.start_agent()?;
    let kernel = random_bytes("big-flip-kernel", 16 << 20);
    let initrd = random_bytes("big-flip-initrd", 96 << 20);
    let (k_hash, i_hash) = (blake3_hex(&kernel), blake3_hex(&initrd));
    lab.cli(&["node", "add", "--rack", RACK, "--mac", "52:54:00:bf:00:01"])?
        .success()?;
    push_image(&lab, "bigflip:1", &kernel, &initrd)?;
    drop((kernel, initrd));
    lab.cli(&["assign", "--node", "1", "bigflip:1"])?
        .success()?;
    wait_for("the image cached", Duration::from_secs(120), || {
        Ok(
            http_blake3(&lab, &format!("blobs/{i_hash}")).is_ok_and(|h| h == i_hash)
                && http_blake3(&lab, &format!("blobs/{k_hash}")).is_ok_and(|h| h == k_hash),
        )
    })?;
    let cache = lab.agent_data().join("cache");

    // Live: flipped under the running agent, then 8 clients at once.
    flip_groups(&cache.join(&i_hash), &[0, 41, 95])?;
    flip_groups(&cache.join(&k_hash), &[1, 7, 15])?;
    let results: Vec<Result<(String, String)>> = std::thread::scope(|s| {
        let lab = &lab;
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let want = if i % 2 == 0 { &i_hash } else { &k_hash };
                s.spawn(move || Ok((want.clone(), http_blake3(lab, &format!("blobs/{want}"))?)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("client thread panicked")))
            })
            .collect()
    });
    let mut corrupt = 0;
    for r in results {
        let (want, got) = r.with_context(|| format!("agent log:\n{}", lab.agent_log()))?;
        if want != got {
            corrupt += 1;
        }
    }
    ensure!(corrupt == 0, "{corrupt} of 8 clients got corrupt bytes");
    let log = lab.agent_log();
    for (what, hash) in [("initrd", &i_hash), ("kernel", &k_hash)] {
        ensure!(
            log.lines()
                .any(|l| l.contains("changed cached blob is damaged") && l.contains(hash.as_str())),
            "the live flips in the {what} must be found by the recheck:\n{log}"
        );
    }
    ensure!(
        log.contains("http: waiting for a blob being fetched or verified"),
        "clients should have waited for the repair:\n{log}"
    );
    for (name, hash) in [("initrd", &i_hash), ("kernel", &k_hash)] {
        let data = std::fs::read(cache.join(hash))?;
        ensure!(
            blake3_hex(&data) == *hash,
            "the cached {name} was not repaired"
        );
    }

    // At rest: flipped while the agent is down, asked for as it starts.
    lab.stop_agent()?;
    flip_groups(&cache.join(&i_hash), &[3, 60])?;
    flip_groups(&cache.join(&k_hash), &[0, 9])?;
    lab.start_agent()?;
    ensure!(
        http_blake3(&lab, &format!("blobs/{i_hash}"))? == i_hash,
        "initrd served corrupt after a restart"
    );
    let got = lab.dir().join("kernel.tftp");
    let mut tftp = lab.client.exec("curl");
    tftp.args(["-sS", "--max-time", "60", "-o"])
        .arg(&got)
        .arg(format!("tftp://{SERVER_IP}/blobs/{k_hash}"));
    run_with_timeout(tftp, Duration::from_secs(70))?.success()?;
    ensure!(
        blake3_hex(&std::fs::read(&got)?) == k_hash,
        "kernel served corrupt over TFTP after a restart"
    );
    let log = lab.agent_log();
    for hash in [&i_hash, &k_hash] {
        ensure!(
            log.lines()
                .any(|l| l.contains("cached blob corrupt") && l.contains(hash.as_str())),
            "flips at rest must be detected at start:\n{log}"
        );
    }
    lab.agent_mut()?.ensure_running()
}
