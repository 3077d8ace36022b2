//! `rackboot storm`: parse the flags, run the boot-storm emulator
//! (`rackboot-storm`), print its report, and exit 2 if any boot failed.

pub use rackboot_storm::StormArgs;

/// Run the storm and print the report.
pub async fn run(args: StormArgs) -> anyhow::Result<()> {
    let storm = rackboot_storm::run(&args).await?;
    if let Some(flood) = storm.dhcp_flood {
        eprintln!(
            "flood: {} DHCPDISCOVERs from random MACs in {:.2} s ({:.0}/s)",
            flood.sent,
            flood.took.as_secs_f64(),
            flood.rate()
        );
    }
    if let Some(flood) = storm.tftp_flood {
        eprintln!(
            "tftp flood: {} unacknowledged RRQs in {:.2} s ({:.0}/s)",
            flood.sent,
            flood.took.as_secs_f64(),
            flood.rate()
        );
    }
    let report = storm.report;
    if args.json {
        say!("{}", report.json());
    } else {
        say!("{}", report.table(&args).trim_end());
    }
    if report.failed() > 0 {
        std::process::exit(2);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;
    use std::sync::Arc;

    use clap::Parser;
    use rackboot_agent::store::files::FileTable;
    use rackboot_agent_domain::view::RackView;
    use rackboot_storm::ClientOutcome;
    use tokio::sync::watch;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        storm: StormArgs,
    }

    /// One client's outcome of a one-client storm.
    async fn one_client(args: &StormArgs) -> ClientOutcome {
        let storm = rackboot_storm::run(args).await.unwrap();
        assert!(storm.dhcp_flood.is_none() && storm.tftp_flood.is_none());
        let outcomes = storm.report.outcomes();
        assert_eq!(outcomes.len(), 1);
        outcomes[0].clone()
    }

    /// Two files over one keep-alive connection from the agent's HTTP
    /// server, verified against its blake3 ETags and --expect-blake3.
    #[tokio::test]
    async fn http_client_loads_kernel_and_initrd_from_the_agent() {
        let kernel: bytes::Bytes = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let initrd: bytes::Bytes = (0..900_000u32).map(|i| (i % 241) as u8).collect();
        let files = HashMap::from([
            ("vmlinuz".to_string(), kernel.clone()),
            ("initrd.img".to_string(), initrd.clone()),
        ]);
        let (_ftx, frx) = watch::channel(Arc::new(FileTable::from_map(files)));
        let (_vtx, vrx) = watch::channel(Arc::new(RackView::default()));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(rackboot_agent::serve::http::run(
            l,
            frx,
            vrx,
            None,
            rackboot_agent::serve::http::HttpLimits::default(),
            Arc::default(),
            stop.clone(),
        ));
        let digest = blake3::hash(&kernel).to_hex().to_string();
        let port_s = port.to_string();
        let args = |expect: &str, file: &str, second: Option<&str>| {
            let mut argv = vec![
                "storm",
                "--server",
                "127.0.0.1",
                "--tftp-only",
                "--transport",
                "http",
                "--http-port",
                &port_s,
                "--file",
                file,
                "--http-retries",
                "1",
                "--time-scale",
                "0.01",
                "--expect-blake3",
                expect,
                "--clients",
                "1",
                "--threads",
                "1",
                "--deadline-secs",
                "30",
            ];
            if let Some(second) = second {
                argv.extend(["--second-file", second]);
            }
            Cli::parse_from(argv).storm
        };
        let o = one_client(&args(&digest, "vmlinuz", Some("/initrd.img"))).await;
        assert_eq!(o.failure, None);
        assert_eq!(o.bytes, 1_200_000);
        assert_eq!(o.resends, 0);
        assert!(o.transfer.is_some());

        let wrong = "0".repeat(64);
        let o = one_client(&args(&wrong, "vmlinuz", Some("/initrd.img"))).await;
        assert!(o.failure.unwrap().contains("!= expected"));

        let o = one_client(&args(&wrong, "nope", None)).await;
        assert_eq!(o.failure.as_deref(), Some("/nope: HTTP 404"));
        assert_eq!(o.resends, 0, "a 404 is not retried");
        stop.cancel();
    }
}
