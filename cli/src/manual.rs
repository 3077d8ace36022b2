//! `rackboot completions SHELL` and `rackboot man --dir DIR`: shell
//! completions and man pages generated from the command's own definitions,
//! so they never drift from `--help`. The Debian package installs both
//! (`deploy/build-debs.sh`).

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

/// Print the completion script for `shell` to stdout.
pub fn completions<C: CommandFactory>(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut cmd = C::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "rackboot", &mut out);
    match std::io::Write::write_all(&mut std::io::stdout().lock(), &out) {
        // `rackboot completions bash | head`: the reader had enough.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing the completion script"),
    }
}

/// Write `rackboot.1` and one page per subcommand (`rackboot-node-show.1`,
/// …) into `dir`; the names written, in order.
pub fn man_pages<C: CommandFactory>(dir: &Path) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = C::command().name("rackboot");
    cmd.build();
    let mut written = Vec::new();
    write_page(&cmd, "rackboot", dir, &mut written)?;
    Ok(written)
}

fn write_page(
    cmd: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<String>,
) -> anyhow::Result<()> {
    if cmd.is_hide_set() {
        return Ok(());
    }
    let page = cmd.clone().name(name.to_string());
    let mut buf = Vec::new();
    clap_mangen::Man::new(page)
        .section("1")
        .manual("rackboot")
        .render(&mut buf)
        .with_context(|| format!("rendering the man page of {name}"))?;
    let file = format!("{name}.1");
    let path = dir.join(&file);
    std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
    written.push(file);
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        write_page(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
