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
