//! System tests: real processes, network namespaces and QEMU guests.
//!
//! They need root and the packages from `tests/scripts/install-deps.sh`;
//! without them each test prints a loud `SKIPPED:` line and passes (set
//! `RACKBOOT_REQUIRE_SYSTEM_TESTS=1` to make that a failure). Run with
//! `cargo test -p rackboot-tests --test system -- --nocapture` to watch.
//!
//! Tests of rackboot itself run the workspace's binaries from
//! `target/debug/` (`rackboot`, `rackboot-coordinator`, `rackboot-agent`):
//! build them first with `cargo build --workspace --bins`
//! (`scripts/test.sh` does). The `cli` and `grpc_reflection` tests use
//! loopback only and need no root.
//!
//! * `cli`: `rackboot` against a loopback coordinator (push, errors);
//! * `blob_cache`: bit flips in 100 cached blob files are detected, the
//!   blobs fetched again, and 0 corrupt bytes are served (root);
//! * `config_files`: `--check-config` of both daemons (every problem with
//!   file, key and reason; flags win over the file);
//! * `deploy`: `deploy/`: the systemd units pass `systemd-analyze verify`,
//!   every file in `deploy/config/` passes `--check-config` (agent files in a
//!   namespace with their interface; root), and the lab (`deploy/lab/up.sh`:
//!   3 coordinators, 2 racks, a QEMU node booting) comes up and
//!   `deploy/lab/down.sh` leaves nothing behind (root, QEMU);
//! * `grpc_reflection`: `grpcurl` lists and calls the coordinator's API;
//! * `harness_selftest`: the harness's own artifacts, namespaces and QEMU;
//! * `pxe_boot`: a QEMU guest PXE-boots from a rack agent (BIOS, iPXE ROM;
//!   root, QEMU), fetches its boot-info and sends a syslog line that the
//!   coordinator ties to the boot session;
//! * `uefi_boot`: the same with OVMF (UEFI): its own PXE stack (`ipxe.efi`
//!   over TFTP from the agent's static root), and its HTTP Boot (vendor class
//!   `HTTPClient`, a boot URI from the agent);
//! * `kernel_upgrade`: a node reassigned to another kernel boots it; its
//!   boot-info, sessions and logs follow;
//! * `boot_support`: what the boot tests share (no tests);
//! * `tls`: `rackboot certs` and mutual TLS between CLI, agent and
//!   coordinator; plaintext and foreign-CA clients refused (no root);
//! * `tftp_clients`: tftp-hpa, atftp and curl fetch files (0 B to 16 MiB)
//!   byte-exact from a rack agent, also under 5% and 20% nftables loss;
//!   leading-slash paths, traversal and writes (root; tftp, atftp, curl);
//! * `dhcp_clients`: dhclient, udhcpc and dhcpcd bind the addresses and
//!   options of their nodes from an agent; a client id does not change the
//!   node; proxyDHCP beside dnsmasq (boot information only, checked on the
//!   wire with tcpdump, and with QEMU's iPXE); a relay (dhcrelay) in front
//!   of the agent (root; isc-dhcp-client, dhcpcd-base, dnsmasq-base,
//!   isc-dhcp-relay, tcpdump);
//! * `storm`: `rackboot storm` against an agent (300 TFTP clients through a
//!   1 Gbit link with 2% loss; 100 DHCP + TFTP clients through a
//!   coordinator; the SIGUSR1 state dump during a storm). Nextest runs
//!   them one at a time (test group `netns-heavy`).
//! * `faults`: a 3-replica coordinator and two racks under storms while
//!   the leader is killed or paused, the coordinators are cut off, an agent
//!   restarts, and agent-coordinator links lose 20 % (root).
//! * `conn_flood`: 1,000 TCP connections from one address against the
//!   coordinator: 256 kept, the rest closed at once and counted, the CLI
//!   still served (loopback).
//! * `spoofing`: TFTP and DHCP from off the rack subnet, and DHCP with a
//!   spoofed relay address, get no reply (root).
//! * `traversal`: ≥ 200 path-traversal encodings over raw TFTP and HTTP,
//!   all refused, nothing outside the static root served (loopback).
//! * `ipv6_ra`: the agent's empty IPv6 router advertisements, asked for by
//!   `rdisc6`, and its silence while a real router advertises (root;
//!   ndisc6, python3).
//! * `node_identity`: provisional leases, the discovery probe (a QEMU guest
//!   with two NICs becomes one node), manual acceptance, `node retire` and
//!   `node replace` (root; QEMU for the first).
//! * `uboot_boot`: U-Boot's distro network boot from the agent: two arm64
//!   guests at once (Debian's `u-boot-qemu`) boot Debian's arm64 kernel,
//!   timed beside dnsmasq with a static boot script; a riscv64 guest
//!   fetches its script and kernel; a missing arm64 UEFI loader is reported
//!   and never offered (root; qemu-system-arm, qemu-system-misc,
//!   u-boot-qemu, opensbi, u-boot-tools, device-tree-compiler,
//!   dnsmasq-base).

// Test modules live in `tests/system/`. A crate root file looks for its
// modules beside itself, hence the explicit paths.
#[path = "system/blob_cache.rs"]
mod blob_cache;
#[path = "system/boot_support.rs"]
mod boot_support;
#[path = "system/cli.rs"]
mod cli;
#[path = "system/config_files.rs"]
mod config_files;
#[path = "system/conn_flood.rs"]
mod conn_flood;
#[path = "system/deploy.rs"]
mod deploy;
#[path = "system/dhcp_clients/mod.rs"]
mod dhcp_clients;
#[path = "system/faults.rs"]
mod faults;
#[path = "system/grpc_reflection.rs"]
mod grpc_reflection;
#[path = "system/harness_selftest.rs"]
mod harness_selftest;
#[path = "system/ipv6_ra.rs"]
mod ipv6_ra;
#[path = "system/kernel_upgrade.rs"]
mod kernel_upgrade;
#[path = "system/node_identity.rs"]
mod node_identity;
#[path = "system/pxe_boot.rs"]
mod pxe_boot;
#[path = "system/spoofing.rs"]
mod spoofing;
#[path = "system/storm/mod.rs"]
mod storm;
#[path = "system/tftp_clients.rs"]
mod tftp_clients;
#[path = "system/tls.rs"]
mod tls;
#[path = "system/traversal.rs"]
mod traversal;
#[path = "system/uboot_boot.rs"]
mod uboot_boot;
#[path = "system/uefi_boot.rs"]
mod uefi_boot;
