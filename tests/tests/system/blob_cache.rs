//! The agent's blob cache under corruption (issue 4): bit flips in 100
//! cached files on disk are all detected when the agent loads them (each
//! file's blake3 against its name), the blobs are fetched again from the
//! coordinator, and every byte the agent then serves over TFTP matches the
//! pushed content: 0 corrupt bytes reach a client. (root; no QEMU)

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
        let k = lab.add_file(&format!("k{i}"), &kernel)?;
        let r = lab.add_file(&format!("r{i}"), &initrd)?;
        let name = format!("bc:{i}");
        lab.cli(&[
            "image",
            "push",
            &name,
            "--kernel",
            &k.display().to_string(),
            "--initrd",
            &r.display().to_string(),
            "--kernel-version",
            "6.1.0-test",
        ])?
        .success()?;
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
    let detected = log.matches("cached blob corrupt").count();
    ensure!(
        detected == 100,
        "every corrupt file must be detected at load ({detected} of 100 logged)"
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
    lab.agent_mut()?.ensure_running()
}
