//! The agent's configuration file on arbitrary text: the TOML parse, the
//! layering under the (empty) command line and the validation return
//! errors, never panic. (The coordinator's file: `coordinator_config`.)
#![no_main]
use std::path::Path;

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use rackboot_agent::config::args::ServeArgs;
use rackboot_agent::config::file::{AgentFile, MainFlags};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    if let Ok(file) = rackboot_config::parse_toml::<AgentFile>(path, text)
        && let Ok(cli) = Cli::try_parse_from(["rackboot-agent"])
        && let Ok(layered) = file.layer(path, MainFlags::default(), cli.serve)
    {
        let _ = layered.resolve();
    }
});
