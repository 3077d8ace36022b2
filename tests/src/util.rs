//! Small helpers for running commands with useful error messages.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Renders a command line for messages, e.g. `ip -n ns1 link set lo up`.
pub fn display_command(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion (stdin closed, output captured) and returns its
/// stdout. Fails, quoting the command, exit status, stdout and stderr, if it
/// cannot be started or exits unsuccessfully.
pub fn run(cmd: &mut Command) -> Result<String> {
    let output = run_output(cmd)?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}):\nstdout: {}\nstderr: {}",
            display_command(cmd),
            output.status,
            String::from_utf8_lossy(&output.stdout).trim_end(),
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `cmd` to completion (stdin closed, output captured) and returns its
/// [`Output`] whatever the exit status; fails only if it cannot be started.
pub fn run_output(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{}`", display_command(cmd)))
}

/// Calls `check` every `every` until it returns `Ok(Some(value))` and
/// returns `Ok(Some(value))`; returns `Ok(None)` once `timeout` has passed
/// without that (the caller fails with what it last saw). An error from
/// `check` ends the wait at once. `check` runs at least once, and once more
/// at or after the deadline.
pub fn wait_until<T>(
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<Option<T>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check()? {
            return Ok(Some(value));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(every);
    }
}
