//! Configuration files: `--check-config` of both daemons accepts a valid
//! file and reports every problem of an invalid one with its file, key and
//! reason (exit 1), and a flag wins over the file; neither daemon accepts a
//! configuration without TLS unless plaintext is asked for. No root, no
//! network.

use std::time::Duration;

use anyhow::{Result, ensure};
use rackboot_tests::daemon::{self, run_with_timeout};

fn check(bin: &str, args: &[&str]) -> Result<rackboot_tests::daemon::CliOutput> {
    let mut cmd = std::process::Command::new(daemon::binary(bin)?);
    cmd.arg("--check-config").args(args);
    run_with_timeout(cmd, Duration::from_secs(20))
}

#[test]
fn agent_check_config_reports_every_problem_with_file_and_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "rack = \"r2\"\ncoordinators = [\"http://10.1.0.1:50051\"]\nlog_level = \"info\"\n\
         plaintext = true\n[network]\nnode_base = \"127.0.0.100\"\n[dhcp]\naccept = \"probe\"\n\
         provisional_range = \"127.0.0.50-127.0.0.60\"\nlease_secs = 1800\n[http]\nenabled = false\n",
    )?;
    let out = check(daemon::AGENT, &["--config", &good.display().to_string()])?;
    ensure!(
        out.status.success() && out.stdout.contains("configuration OK"),
        "{out}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "log_level = \"info,[\"\n[network]\nnode_base = \"10.9.9.9\"\n[dhcp]\naccept = \"manual\"\n",
    )?;
    let bad_path = bad.display().to_string();
    let out = check(daemon::AGENT, &["--config", &bad_path])?;
    ensure!(!out.status.success(), "an invalid file must fail:\n{out}");
    for key in ["log_level", "network.node_base", "dhcp.accept"] {
        ensure!(
            out.stderr
                .contains(&format!("config {bad_path}: key `{key}`")),
            "every problem should name the file and key `{key}`:\n{out}"
        );
    }
    // A flag fixes one problem and is named as the command line's when wrong.
    let out = check(
        daemon::AGENT,
        &[
            "--config",
            &bad_path,
            "--node-base",
            "127.0.0.9",
            "--accept",
            "first-seen",
        ],
    )?;
    ensure!(
        !out.status.success()
            && out.stderr.contains("key `log_level`")
            && !out.stderr.contains("node_base")
            && !out.stderr.contains("dhcp.accept"),
        "flags win over the file:\n{out}"
    );

    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "[dhcp]\nlese_secs = 5\n")?;
    let out = check(daemon::AGENT, &["--config", &unknown.display().to_string()])?;
    ensure!(
        !out.status.success() && out.stderr.contains("key `dhcp.lese_secs`"),
        "an unknown key is named:\n{out}"
    );
    Ok(())
}

#[test]
fn coordinator_check_config_names_file_and_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let good = dir.path().join("c.toml");
    std::fs::write(
        &good,
        "id = 2\nlisten = \"127.0.0.1:7002\"\nplaintext = true\n\
         [peers]\n1 = \"127.0.0.1:7001\"\n2 = \"127.0.0.1:7002\"\n",
    )?;
    let out = check(
        daemon::COORDINATOR,
        &["--config", &good.display().to_string()],
    )?;
    ensure!(
        out.status.success() && out.stdout.contains("configuration OK"),
        "{out}"
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "id = 1\ntick_ms = 0\n")?;
    let out = check(
        daemon::COORDINATOR,
        &["--config", &bad.display().to_string()],
    )?;
    ensure!(
        !out.status.success() && out.stderr.contains("key `tick_ms`"),
        "{out}"
    );
    Ok(())
}

/// Without TLS files and without `plaintext`, both daemons refuse the
/// configuration (`--check-config` exit 1, naming the file's `tls_ca` and
/// the way out); `--plaintext` or `plaintext = true` is the explicit ask.
#[test]
fn no_tls_is_refused_unless_plaintext_is_asked_for() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for (bin, text) in [
        (daemon::AGENT, "rack = \"r1\"\n"),
        (daemon::COORDINATOR, "id = 1\n"),
    ] {
        let file = dir.path().join(format!("{bin}.toml"));
        std::fs::write(&file, text)?;
        let path = file.display().to_string();
        let out = check(bin, &["--config", &path])?;
        ensure!(
            !out.status.success()
                && out.stderr.contains(&format!("config {path}: key `tls_ca`"))
                && out.stderr.contains("--plaintext"),
            "{bin} without TLS must be refused, naming tls_ca and --plaintext:\n{out}"
        );
        let out = check(bin, &["--config", &path, "--plaintext"])?;
        ensure!(
            out.status.success() && out.stdout.contains("configuration OK"),
            "{bin} --plaintext:\n{out}"
        );
        std::fs::write(&file, format!("{text}plaintext = true\n"))?;
        let out = check(bin, &["--config", &path])?;
        ensure!(
            out.status.success() && out.stdout.contains("configuration OK"),
            "{bin} with plaintext = true:\n{out}"
        );
        // Without any file: the command line is named.
        let out = check(bin, &[])?;
        ensure!(
            !out.status.success() && out.stderr.contains("--plaintext"),
            "{bin} with no file and no TLS must be refused:\n{out}"
        );
    }
    Ok(())
}
