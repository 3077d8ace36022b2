//! The `rackboot` CLI against a real coordinator on loopback: image push
//! (large files, idempotence, content addressing), and errors an operator
//! can act on. No root needed.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use rackboot_tests::daemon::{
    self, CliOutput, LoopbackCoordinator, free_loopback_port, run_with_timeout,
};

/// Generous: a debug-build CLI and coordinator on a busy 2-core machine.
const PUSH_TIMEOUT: Duration = Duration::from_secs(300);
const QUICK_TIMEOUT: Duration = Duration::from_secs(60);

/// Writes `len` bytes of xorshift64 output (seeded with `seed`) to `path`:
/// incompressible, fast, and different per seed.
fn write_pseudo_random(path: &Path, len: usize, seed: u64) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut x = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for chunk in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len());
        out.write_all(&buf[..n])?;
        left -= n;
    }
    out.flush()?;
    Ok(())
}

/// Total size in bytes of all files under `dir` (recursively).
fn tree_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            total += tree_bytes(&entry.path())?;
        } else {
            total += meta.len();
        }
    }
    Ok(total)
}

fn is_blake3_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn rackboot(coord: &LoopbackCoordinator, args: &[&str], timeout: Duration) -> Result<CliOutput> {
    let url = coord.url();
    let mut all = vec!["--coordinator", url.as_str()];
    all.extend_from_slice(args);
    daemon::cli(None, &all, timeout)
}

/// A 100 MiB kernel uploads; pushing the same image again prints the same
/// manifest hash, says the blobs were already stored, and stores nothing.
#[test]
fn image_push_large_file_then_identical_push_stores_nothing() -> Result<()> {
    let coord = LoopbackCoordinator::start()?;
    let files = tempfile::tempdir()?;
    let kernel = files.path().join("vmlinuz-100MiB");
    let initrd = files.path().join("initrd.img");
    let seed = u64::from(std::process::id()) << 20 ^ 0x9e37_79b9_7f4a_7c15;
    write_pseudo_random(&kernel, 100 << 20, seed)?;
    write_pseudo_random(&initrd, 64 << 10, seed.rotate_left(17))?;
    let (kernel_s, initrd_s) = (
        kernel.to_str().context("temp path not UTF-8")?,
        initrd.to_str().context("temp path not UTF-8")?,
    );
    let push_args = [
        "image",
        "push",
        "big:1",
        "--kernel",
        kernel_s,
        "--initrd",
        initrd_s,
        "--cmdline",
        "console=ttyS0",
    ];
    let blobs = coord.data_dir().join("blobs");

    let t = Instant::now();
    let first = rackboot(&coord, &push_args, PUSH_TIMEOUT)?;
    let first_secs = t.elapsed().as_secs_f64();
    ensure!(
        first.status.success(),
        "first push failed: {first}\n{}",
        coord.daemon.report()
    );
    let hash = first.last_line().to_string();
    ensure!(
        is_blake3_hex(&hash),
        "the last line of a push must be the 64-hex manifest hash, got {hash:?}:\n{first}"
    );
    ensure!(
        !first
            .stdout
            .lines()
            .any(|l| l.starts_with("kernel") && l.contains("already stored")),
        "the first push claims the kernel was already stored:\n{first}"
    );
    let after_first = tree_bytes(&blobs)?;
    ensure!(
        after_first >= 100 << 20,
        "after pushing a 100 MiB kernel, {} holds only {after_first} bytes",
        blobs.display()
    );

    let t = Instant::now();
    let second = rackboot(&coord, &push_args, PUSH_TIMEOUT)?;
    let second_secs = t.elapsed().as_secs_f64();
    ensure!(
        second.status.success(),
        "identical second push failed: {second}\n{}",
        coord.daemon.report()
    );
    ensure!(
        second.last_line() == hash,
        "identical push printed manifest {:?}, the first printed {hash:?}:\n{second}",
        second.last_line()
    );
    for what in ["kernel", "initrd"] {
        ensure!(
            second
                .stdout
                .lines()
                .any(|l| l.starts_with(what) && l.contains("already stored")),
            "the second push should say the {what} was already stored:\n{second}"
        );
    }
    let after_second = tree_bytes(&blobs)?;
    ensure!(
        after_second == after_first,
        "the identical push changed {}: {after_first} -> {after_second} bytes",
        blobs.display()
    );

    // The image is listed once.
    let list = rackboot(&coord, &["image", "list"], QUICK_TIMEOUT)?.success()?;
    ensure!(
        list.stdout.matches("big:1").count() == 1,
        "`image list` should show big:1 once:\n{list}"
    );
    eprintln!(
        "push 100 MiB: {first_secs:.1} s; identical push: {second_secs:.1} s; manifest {hash}"
    );
    Ok(())
}

/// Pushing a file that does not exist fails and names the path.
#[test]
fn image_push_missing_file_names_path() -> Result<()> {
    let coord = LoopbackCoordinator::start()?;
    let files = tempfile::tempdir()?;
    let initrd = files.path().join("initrd.img");
    std::fs::write(&initrd, b"tiny initrd")?;
    let missing = files.path().join("no-such-vmlinuz");
    let missing_s = missing.to_str().context("temp path not UTF-8")?;
    let out = rackboot(
        &coord,
        &[
            "image",
            "push",
            "ghost:1",
            "--kernel",
            missing_s,
            "--initrd",
            initrd.to_str().context("temp path not UTF-8")?,
        ],
        QUICK_TIMEOUT,
    )?
    .failure()?;
    ensure!(
        out.combined().contains(missing_s),
        "the error should name the missing file {missing_s}:\n{out}"
    );
    let list = rackboot(&coord, &["image", "list"], QUICK_TIMEOUT)?.success()?;
    ensure!(
        !list.stdout.contains("ghost:1"),
        "a failed push must not commit an image:\n{list}"
    );
    Ok(())
}

/// Assigning an image that does not exist fails and names it.
#[test]
fn assign_unknown_image_fails_naming_it() -> Result<()> {
    let coord = LoopbackCoordinator::start()?;
    let out = rackboot(
        &coord,
        &["assign", "--default", "no-such-image"],
        QUICK_TIMEOUT,
    )?
    .failure()?;
    ensure!(
        out.combined().contains("image 'no-such-image' not found"),
        "expected \"image 'no-such-image' not found\":\n{out}"
    );
    Ok(())
}

/// With nothing listening, every admin command fails quickly and its message
/// names the coordinator's address, whether given by flag or environment.
#[test]
fn unreachable_coordinator_is_named_in_errors() -> Result<()> {
    let port = free_loopback_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let files = tempfile::tempdir()?;
    let f = files.path().join("f");
    std::fs::write(&f, b"x")?;
    let f = f.to_str().context("temp path not UTF-8")?;
    let commands: &[&[&str]] = &[
        &["image", "list"],
        &["image", "push", "x:1", "--kernel", f, "--initrd", f],
        &["node", "list"],
        &["node", "show", "1"],
        &["rack", "list"],
        &["assign", "--default", "x:1"],
        &["cluster", "status"],
    ];
    for args in commands {
        let mut all = vec!["--coordinator", url.as_str()];
        all.extend_from_slice(args);
        let t = Instant::now();
        let out = daemon::cli(None, &all, QUICK_TIMEOUT)?.failure()?;
        ensure!(
            out.combined().contains(&url),
            "the error should name {url}:\n{out}"
        );
        ensure!(
            t.elapsed() < Duration::from_secs(15),
            "`{}` took {:?} to fail against a closed port",
            out.command,
            t.elapsed()
        );
    }
    // Same through RACKBOOT_COORDINATOR.
    let mut cmd = std::process::Command::new(daemon::binary(daemon::CLI)?);
    cmd.args(["node", "list"]).env("RACKBOOT_COORDINATOR", &url);
    let out = run_with_timeout(cmd, QUICK_TIMEOUT)?.failure()?;
    ensure!(
        out.combined().contains(&url),
        "with RACKBOOT_COORDINATOR, the error should name {url}:\n{out}"
    );
    Ok(())
}

/// A module bundle must be for the kernel's release (read from its boot
/// header): a mismatch is refused naming both versions, by the CLI before
/// uploading and by the coordinator for a client that skips the check
/// (grpcurl); nothing is committed. Matching bundles are accepted and the
/// manifest names them.
#[test]
fn image_push_refuses_modules_for_another_kernel() -> Result<()> {
    use rackboot_tests::testbed::module_bundle;
    let coord = LoopbackCoordinator::start()?;
    let dir = tempfile::tempdir()?;
    let p = |name: &str| dir.path().join(name);
    let s = |path: &Path| {
        path.to_str()
            .map(str::to_string)
            .context("temp path not UTF-8")
    };
    let (rel_a, rel_b) = ("6.1.0-rb-a", "6.1.0-rb-b");
    std::fs::write(
        p("vmlinuz-a"),
        rackboot_image::kernel::synthetic_bzimage(&format!("{rel_a} (test) #1 SMP")),
    )?;
    std::fs::write(
        p("vmlinuz-b"),
        rackboot_image::kernel::synthetic_bzimage(&format!("{rel_b} (test) #1 SMP")),
    )?;
    std::fs::write(p("initrd"), b"initrd")?;
    module_bundle(&p("modules-a.tar"), rel_a)?;
    module_bundle(&p("modules-b.tar"), rel_b)?;
    let push = |name: &str, kernel: &str, modules: &str, extra: &[&str]| -> Result<CliOutput> {
        let (k, i, m) = (s(&p(kernel))?, s(&p("initrd"))?, s(&p(modules))?);
        let mut args = vec![
            "image",
            "push",
            name,
            "--kernel",
            &k,
            "--initrd",
            &i,
            "--modules",
            &m,
        ];
        args.extend_from_slice(extra);
        rackboot(&coord, &args, PUSH_TIMEOUT)
    };

    let bad = push("mod:bad", "vmlinuz-a", "modules-b.tar", &[])?.failure()?;
    ensure!(
        bad.combined().contains(rel_a) && bad.combined().contains(rel_b),
        "the refusal should name both versions:\n{bad}"
    );
    let wrong = push(
        "mod:ver",
        "vmlinuz-a",
        "modules-a.tar",
        &["--kernel-version", "6.1.0-rb-x"],
    )?
    .failure()?;
    ensure!(
        wrong.combined().contains("6.1.0-rb-x") && wrong.combined().contains(rel_a),
        "a --kernel-version the header contradicts should be refused naming both:\n{wrong}"
    );
    push("mod:a", "vmlinuz-a", "modules-a.tar", &[])?.success()?;
    push("mod:b", "vmlinuz-b", "modules-b.tar", &[])?.success()?;
    let list = rackboot(&coord, &["image", "list"], QUICK_TIMEOUT)?.success()?;
    ensure!(
        list.stdout.contains("mod:a") && list.stdout.contains("mod:b"),
        "matching pushes should be committed:\n{list}"
    );

    // The coordinator checks too: kernel A with bundle B (both stored now).
    if rackboot_tests::commands_skip_reason(&["grpcurl"]).is_none() {
        let blob = |name: &str| -> Result<String> {
            let data = std::fs::read(p(name))?;
            Ok(format!(
                "{{\"blake3\":\"{}\",\"size\":{}}}",
                blake3::hash(&data).to_hex(),
                data.len()
            ))
        };
        let body = format!(
            "{{\"name\":\"mod:forged\",\"kernel\":{},\"initrd\":{},\"modules\":{}}}",
            blob("vmlinuz-a")?,
            blob("initrd")?,
            blob("modules-b.tar")?
        );
        let addr = coord.addr.to_string();
        let mut cmd = std::process::Command::new("grpcurl");
        cmd.args([
            "-plaintext",
            "-d",
            &body,
            &addr,
            "rackboot.v1.ImageService/CommitImage",
        ]);
        let forged = run_with_timeout(cmd, QUICK_TIMEOUT)?.failure()?;
        ensure!(
            forged.combined().contains("InvalidArgument")
                && forged.combined().contains(rel_a)
                && forged.combined().contains(rel_b),
            "the coordinator should refuse the forged commit naming both versions:\n{forged}"
        );
    } else {
        eprintln!("grpcurl missing: coordinator-side check not exercised here");
    }
    let list = rackboot(&coord, &["image", "list"], QUICK_TIMEOUT)?.success()?;
    for refused in ["mod:bad", "mod:ver", "mod:forged"] {
        ensure!(
            !list.stdout.contains(refused),
            "{refused} must not be committed:\n{list}"
        );
    }
    Ok(())
}

/// `meta set/list/unset` round trip; an invalid key is refused with the rule.
#[test]
fn meta_set_list_unset() -> Result<()> {
    let coord = LoopbackCoordinator::start()?;
    rackboot(
        &coord,
        &["meta", "set", "NTP_SERVER", "10.0.0.1"],
        QUICK_TIMEOUT,
    )?
    .success()?;
    rackboot(&coord, &["meta", "set", "SITE", "lab one"], QUICK_TIMEOUT)?.success()?;
    let list = rackboot(&coord, &["meta", "list"], QUICK_TIMEOUT)?.success()?;
    ensure!(
        list.stdout.contains("NTP_SERVER=10.0.0.1\n") && list.stdout.contains("SITE=lab one\n"),
        "meta list:\n{list}"
    );
    let bad = rackboot(&coord, &["meta", "set", "bad-key", "x"], QUICK_TIMEOUT)?.failure()?;
    ensure!(
        bad.combined().contains("bad-key") && bad.combined().contains("letters, digits and _"),
        "an invalid key should be refused with the rule:\n{bad}"
    );
    rackboot(&coord, &["meta", "unset", "SITE"], QUICK_TIMEOUT)?.success()?;
    let list = rackboot(&coord, &["meta", "list"], QUICK_TIMEOUT)?.success()?;
    ensure!(
        !list.stdout.contains("SITE=") && list.stdout.contains("NTP_SERVER="),
        "after unset:\n{list}"
    );
    Ok(())
}

/// Backup and restore: `rackboot cluster backup` writes a verified backup of
/// the state (site key-values, an image, an assignment); the stopped
/// replica's data directory exports the same revision offline
/// (`--export-state`, the lost-quorum path); `--restore-state` founds a new
/// group from the backup, which serves the same state; a damaged backup and
/// a non-empty data directory are refused.
#[test]
fn backup_export_and_restore_the_state() -> Result<()> {
    let mut coord = LoopbackCoordinator::start()?;
    let dir = coord.temp_dir().to_path_buf();
    rackboot(&coord, &["meta", "set", "SITE", "backed-up"], QUICK_TIMEOUT)?.success()?;
    let kernel = dir.join("k");
    let initrd = dir.join("i");
    write_pseudo_random(&kernel, 4096, 1)?;
    write_pseudo_random(&initrd, 8192, 2)?;
    rackboot(
        &coord,
        &[
            "image",
            "push",
            "bk:1",
            "--kernel",
            &kernel.display().to_string(),
            "--initrd",
            &initrd.display().to_string(),
            "--kernel-version",
            "6.1.0-test",
        ],
        QUICK_TIMEOUT,
    )?
    .success()?;
    rackboot(&coord, &["assign", "--default", "bk:1"], QUICK_TIMEOUT)?.success()?;
    let backup = dir.join("state.backup");
    let out = rackboot(
        &coord,
        &["cluster", "backup", &backup.display().to_string()],
        QUICK_TIMEOUT,
    )?
    .success()?;
    let revision = out
        .stdout
        .split("revision ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .context("no revision in the backup message")?
        .to_string();

    // Offline export from the stopped replica: the same revision.
    coord.daemon.kill()?;
    let bin = daemon::binary(daemon::COORDINATOR)?;
    let exported = dir.join("offline.backup");
    let mut cmd = std::process::Command::new(&bin);
    cmd.arg("--listen")
        .arg(coord.addr.to_string())
        .arg("--data")
        .arg(coord.data_dir())
        .arg("--export-state")
        .arg(&exported);
    let out = run_with_timeout(cmd, QUICK_TIMEOUT)?.success()?;
    ensure!(
        out.stdout.contains(&format!("revision {revision}")),
        "the offline export should reach revision {revision}:\n{out}"
    );

    // Restore into a new data directory and serve it.
    let port = daemon::free_loopback_port()?;
    let listen = format!("127.0.0.1:{port}");
    let data2 = dir.join("restored");
    let restore = |file: &Path, data: &Path| -> Result<CliOutput> {
        let mut cmd = std::process::Command::new(&bin);
        cmd.args(["--listen", &listen, "--data"])
            .arg(data)
            .arg("--restore-state")
            .arg(file);
        run_with_timeout(cmd, QUICK_TIMEOUT)
    };
    restore(&backup, &data2)?.success()?;
    let again = restore(&backup, &data2)?.failure()?;
    ensure!(
        again.combined().contains("empty data directory"),
        "restoring over a replica's state must be refused:\n{again}"
    );
    let mut damaged = std::fs::read(&backup)?;
    if let Some(b) = damaged.last_mut() {
        *b ^= 0x20;
    }
    let damaged_path = dir.join("damaged.backup");
    std::fs::write(&damaged_path, &damaged)?;
    let bad = restore(&damaged_path, &dir.join("never"))?.failure()?;
    ensure!(
        bad.combined().contains("damaged"),
        "a damaged backup must be refused:\n{bad}"
    );

    let mut cmd = std::process::Command::new(&bin);
    cmd.args(["--plaintext", "--listen", &listen, "--data"])
        .arg(&data2);
    let mut restored =
        daemon::Daemon::spawn("restored coordinator", cmd, &dir.join("restored.log"))?;
    restored.wait_for_tcp(listen.parse()?, None, Duration::from_secs(30))?;
    let url = format!("http://{listen}");
    let meta = daemon::cli(
        None,
        &["--coordinator", &url, "meta", "list"],
        QUICK_TIMEOUT,
    )?
    .success()?;
    let images = daemon::cli(
        None,
        &["--coordinator", &url, "image", "list"],
        QUICK_TIMEOUT,
    )?
    .success()?;
    ensure!(
        meta.stdout.contains("SITE=backed-up") && images.stdout.contains("bk:1"),
        "the restored group should serve the backed-up state:\n{meta}\n{images}"
    );
    Ok(())
}

/// Shell completions and man pages come from the command's own
/// definitions: every shell's script names the subcommands, `man --dir`
/// writes a page per command with its options, and a shell it does not
/// know is a usage error (exit status 2) naming the ones it does.
#[test]
fn completions_and_man_pages_come_from_the_command_definitions() -> Result<()> {
    let t = Duration::from_secs(20);
    for (shell, marker) in [
        ("bash", "_rackboot()"),
        ("zsh", "#compdef rackboot"),
        ("fish", "complete -c rackboot"),
    ] {
        let out = daemon::cli(None, &["completions", shell], t)?.success()?;
        ensure!(
            out.stdout.contains(marker),
            "{shell} completions lack {marker:?}"
        );
        for sub in ["image", "node", "rack", "assign", "logs", "cluster"] {
            ensure!(
                out.stdout.contains(sub),
                "{shell} completions do not name `{sub}`"
            );
        }
    }
    let bad = daemon::cli(None, &["completions", "tcsh"], t)?;
    ensure!(
        bad.status.code() == Some(2) && bad.stderr.contains("bash"),
        "an unknown shell is a usage error listing the known ones:\n{bad}"
    );

    let dir = tempfile::tempdir()?;
    let out = daemon::cli(
        None,
        &["man", "--dir", &dir.path().display().to_string()],
        t,
    )?
    .success()?;
    ensure!(out.stdout.contains("man pages"), "{out}");
    let page = std::fs::read_to_string(dir.path().join("rackboot-node-show.1"))?;
    ensure!(
        page.contains(".TH rackboot-node-show 1") && page.contains("timeline"),
        "rackboot-node-show.1 lacks its title or --timeline:\n{page}"
    );
    for name in ["rackboot.1", "rackboot-image-push.1", "rackboot-storm.1"] {
        ensure!(dir.path().join(name).is_file(), "{name} not written");
    }
    Ok(())
}
