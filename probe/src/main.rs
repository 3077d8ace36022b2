//! `rackboot-probe`: the discovery probe as a small standalone binary for
//! initramfs images (see the library documentation).

use clap::Parser;

/// Report every MAC of this machine to the rack agent and wait for its node
/// number. Exits 0 once numbered (printing `node=<name>`), 1 otherwise.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    args: rackboot_probe::ProbeArgs,
}

fn main() {
    let cli = Cli::parse();
    match rackboot_probe::run(&cli.args) {
        Ok(out) => {
            println!("node={}", out.node);
        }
        Err(e) => {
            eprintln!("rackboot-probe: error: {e}");
            std::process::exit(1);
        }
    }
}
