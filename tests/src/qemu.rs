//! QEMU guests with a serial console the test can wait on.
//!
//! A [`QemuGuest`] runs `qemu-system-x86_64` with software emulation
//! (`-accel tcg`, no KVM needed), `-machine pc` (SeaBIOS), `-nographic
//! -nodefaults -serial stdio` so that the firmware, iPXE and the kernel
//! (`console=ttyS0`) all print to the serial console, which the harness reads.
//! Every byte is kept: [`QemuGuest::transcript`] returns the cleaned text, and
//! the raw output goes to a file under
//! `target/rackboot-test-artifacts/transcripts/` as it arrives
//! ([`QemuGuest::transcript_path`]), so a failed test leaves it behind.
//!
//! Two ways to boot ([`Boot`]):
//! * [`Boot::Network`]: `-boot n`; the NIC's option ROM (Debian's
//!   `ipxe-qemu`: iPXE for e1000) does DHCP + TFTP. NICs are tap devices in
//!   a test namespace: use [`QemuGuest::spawn_in`] with a [`Netns`] holding
//!   the tap (see [`Netns::bridge_with_tap`]). With UEFI firmware
//!   ([`QemuOpts::uefi_network_boot`], OVMF from Debian's `ovmf` as two
//!   pflash drives, see [`Ovmf`]) and a NIC without option ROM
//!   ([`Nic::virtio_firmware_pxe`]), EDK2's own PXE stack boots instead.
//! * [`Boot::DirectKernel`]: `-kernel -initrd -append`, to check artifacts or
//!   boot a guest straight into Linux.
//!
//! The guest is killed when the [`QemuGuest`] is dropped.
//!
//! ```no_run
//! use std::time::Duration;
//! use rackboot_tests::{netns::Netns, qemu::{QemuGuest, QemuOpts}};
//! # fn main() -> anyhow::Result<()> {
//! let rack = Netns::create("rb-rack")?;
//! rack.bridge_with_tap("br0", Some("192.0.2.1/24"), "tap0")?;
//! // ... start the rack agent in `rack` on br0 ...
//! let mut guest = QemuGuest::spawn_in(
//!     &rack,
//!     QemuOpts::network_boot("node1", "tap0", "52:54:00:00:00:01"),
//! )?;
//! guest.wait_for_line("iPXE", Duration::from_secs(30))?;
//! let lease = guest.wait_for_line("RACKBOOT-DHCP: bound", Duration::from_secs(120))?;
//! # let _ = lease;
//! # Ok(())
//! # }
//! ```

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::netns::{Netns, check_ifname};
use crate::util::display_command;

/// The QEMU binary used unless [`QemuOpts::qemu`] says otherwise.
pub const QEMU: &str = "qemu-system-x86_64";

/// How many trailing transcript lines error messages quote.
const TAIL_LINES: usize = 60;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// How the guest boots.
#[derive(Debug, Clone)]
pub enum Boot {
    /// Firmware network boot (`-boot n`) through the NICs' option ROMs.
    Network,
    /// The firmware boots by itself (U-Boot's autoboot runs its distro
    /// boot, network included): no `-boot` option.
    Firmware,
    /// Direct kernel boot (`-kernel`, `-initrd`, `-append`).
    DirectKernel {
        /// Kernel image (`vmlinuz`).
        kernel: PathBuf,
        /// Initramfs, if any.
        initrd: Option<PathBuf>,
        /// Full kernel command line. [`QemuOpts::direct_kernel`] puts
        /// `console=ttyS0 panic=-1` first so that output reaches the harness
        /// and a panic ends QEMU (with `-no-reboot`).
        append: String,
    },
}

/// One guest NIC backed by a tap device in the guest's namespace.
#[derive(Debug, Clone)]
pub struct Nic {
    /// Tap device name (must exist in the namespace passed to
    /// [`QemuGuest::spawn_in`]).
    pub tap: String,
    /// MAC address, e.g. `52:54:00:12:34:56`.
    pub mac: String,
    /// QEMU device model: `e1000` (BIOS iPXE ROM), `virtio-net-pci`, ...
    pub model: String,
    /// `romfile=` for the device: `None` keeps QEMU's default ROM (iPXE),
    /// `Some("")` removes it (e.g. to let OVMF's own PXE stack boot).
    pub romfile: Option<String>,
    /// `bootindex=` for the device: UEFI firmware (OVMF) orders its boot
    /// options by it (it ignores `-boot n`); `None` leaves it unset.
    pub bootindex: Option<u32>,
}

impl Nic {
    /// An e1000 NIC (option ROM: iPXE from Debian's `ipxe-qemu`).
    pub fn e1000(tap: &str, mac: &str) -> Nic {
        Nic {
            tap: tap.to_string(),
            mac: mac.to_string(),
            model: "e1000".to_string(),
            romfile: None,
            bootindex: None,
        }
    }

    /// A virtio-net NIC on the virtio-mmio bus (`virtio-net-device`), for
    /// `virt` boards. Not `virtio-net-pci`: U-Boot 2023.01's virtio-net PCI
    /// driver reads the MAC as 52:52:52:52:52:52 whatever QEMU is given, so
    /// every guest would send the same MAC.
    pub fn virtio_mmio(tap: &str, mac: &str) -> Nic {
        Nic {
            tap: tap.to_string(),
            mac: mac.to_string(),
            model: "virtio-net-device".to_string(),
            romfile: None,
            bootindex: None,
        }
    }

    /// A virtio-net NIC with its option ROM removed (`romfile=`) and
    /// `bootindex=1`: under OVMF, the firmware's own EDK2 network stack (PXE,
    /// HTTP boot) boots from it, not QEMU's iPXE-EFI ROM.
    pub fn virtio_firmware_pxe(tap: &str, mac: &str) -> Nic {
        Nic {
            tap: tap.to_string(),
            mac: mac.to_string(),
            model: "virtio-net-pci".to_string(),
            romfile: Some(String::new()),
            bootindex: Some(1),
        }
    }
}

/// The boards [`QemuOpts::uboot`] runs, with Debian's firmware files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UbootArch {
    /// arm64: `qemu-system-aarch64`, U-Boot `qemu_arm64`.
    Aarch64,
    /// riscv64: `qemu-system-riscv64`, OpenSBI + U-Boot `qemu-riscv64_smode`.
    Riscv64,
}

impl UbootArch {
    /// Debian `u-boot-qemu`: U-Boot for QEMU's arm64 `virt` board.
    pub const AARCH64_UBOOT: &'static str = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";
    /// Debian `u-boot-qemu`: U-Boot for riscv64 `virt`, supervisor mode.
    pub const RISCV64_UBOOT: &'static str = "/usr/lib/u-boot/qemu-riscv64_smode/uboot.elf";
    /// Debian `opensbi`: the machine-mode firmware U-Boot runs under.
    pub const RISCV64_OPENSBI: &'static str =
        "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_jump.elf";

    /// The QEMU binary.
    pub fn qemu(self) -> &'static str {
        match self {
            UbootArch::Aarch64 => "qemu-system-aarch64",
            UbootArch::Riscv64 => "qemu-system-riscv64",
        }
    }

    /// Firmware files it needs.
    pub fn firmware(self) -> &'static [&'static str] {
        match self {
            UbootArch::Aarch64 => &[Self::AARCH64_UBOOT],
            UbootArch::Riscv64 => &[Self::RISCV64_UBOOT, Self::RISCV64_OPENSBI],
        }
    }
}

/// One `-drive if=pflash` (UEFI firmware code or variable store).
#[derive(Debug, Clone)]
pub struct Pflash {
    /// Raw image file.
    pub path: PathBuf,
    /// Read-only (`readonly=on`): the firmware code. The variable store
    /// must be writable (and should be a private copy, see
    /// [`Ovmf::vars_copy`]).
    pub readonly: bool,
}

/// OVMF (UEFI for x86-64 QEMU guests) from Debian's `ovmf` package: the
/// firmware code and the template of its variable store, a matching pair.
#[derive(Debug, Clone)]
pub struct Ovmf {
    /// `OVMF_CODE.fd`: mapped read-only.
    pub code: PathBuf,
    /// `OVMF_VARS.fd`: never used directly, copied per guest.
    pub vars_template: PathBuf,
}

impl Ovmf {
    /// Pairs tried, in order: Debian 12's 2 MiB non-secure-boot build, then
    /// its 4 MiB build. Code and variable store must come from the same
    /// build (their sizes must match the flash layout).
    pub const CANDIDATES: [(&'static str, &'static str); 2] = [
        (
            "/usr/share/OVMF/OVMF_CODE.fd",
            "/usr/share/OVMF/OVMF_VARS.fd",
        ),
        (
            "/usr/share/OVMF/OVMF_CODE_4M.fd",
            "/usr/share/OVMF/OVMF_VARS_4M.fd",
        ),
    ];

    /// `-fw_cfg` knobs (OvmfPkg's runtime configuration) that remove the
    /// "UEFI PXEv4" and "UEFI PXEv6" boot options, leaving HTTP Boot first.
    pub const NO_PXE: [(&'static str, &'static str); 2] = [
        ("opt/org.tianocore/IPv4PXESupport", "no"),
        ("opt/org.tianocore/IPv6PXESupport", "no"),
    ];

    /// The first installed pair of [`Ovmf::CANDIDATES`], if any.
    pub fn find() -> Option<Ovmf> {
        Ovmf::CANDIDATES.iter().find_map(|(code, vars)| {
            let (code, vars) = (Path::new(code), Path::new(vars));
            (code.is_file() && vars.is_file()).then(|| Ovmf {
                code: code.to_path_buf(),
                vars_template: vars.to_path_buf(),
            })
        })
    }

    /// Copies the variable-store template into `dir` (as `<name>-VARS.fd`)
    /// and returns the copy's path: each guest needs its own writable store
    /// (the firmware writes boot options into it).
    pub fn vars_copy(&self, dir: &Path, name: &str) -> Result<PathBuf> {
        let dest = dir.join(format!("{name}-VARS.fd"));
        std::fs::copy(&self.vars_template, &dest).with_context(|| {
            format!(
                "copying {} to {}",
                self.vars_template.display(),
                dest.display()
            )
        })?;
        Ok(dest)
    }

    /// The two pflash drives for a guest: the code read-only (unit 0) and
    /// the writable variable store `vars` (unit 1).
    pub fn pflash(&self, vars: &Path) -> Vec<Pflash> {
        vec![
            Pflash {
                path: self.code.clone(),
                readonly: true,
            },
            Pflash {
                path: vars.to_path_buf(),
                readonly: false,
            },
        ]
    }
}

/// Options for [`QemuGuest::spawn`] / [`QemuGuest::spawn_in`]. Build one
/// with [`QemuOpts::direct_kernel`] or [`QemuOpts::network_boot`] and adjust
/// the public fields.
#[derive(Debug, Clone)]
pub struct QemuOpts {
    /// Short name: used for `-name` and the transcript file name.
    pub name: String,
    /// How to boot.
    pub boot: Boot,
    /// NICs, in PCI order (the first is booted from with [`Boot::Network`]).
    pub nics: Vec<Nic>,
    /// Guest memory in MiB (default 512).
    pub memory_mb: u32,
    /// `-bios` firmware file (default: QEMU's SeaBIOS). E.g.
    /// `/usr/share/ovmf/OVMF.fd` for UEFI.
    pub bios: Option<PathBuf>,
    /// Firmware flash drives (`-drive if=pflash,format=raw,unit=N`), in unit
    /// order: for UEFI, [`Ovmf::pflash`]. Empty by default.
    pub pflash: Vec<Pflash>,
    /// Named firmware configuration strings (`-fw_cfg name=NAME,string=VALUE`),
    /// e.g. OVMF's [`Ovmf::NO_PXE`] knobs.
    pub fw_cfg: Vec<(String, String)>,
    /// SMBIOS system UUID (`-uuid`); QEMU's default sends all zeros in
    /// DHCP option 97.
    pub uuid: Option<String>,
    /// Pass `-no-reboot`, so a guest reboot (or panic with `panic=-1`) ends
    /// QEMU (default true).
    pub no_reboot: bool,
    /// Further arguments, appended last.
    pub extra_args: Vec<String>,
    /// QEMU binary (default [`QEMU`]).
    pub qemu: String,
    /// `-machine` (default `pc`).
    pub machine: String,
}

impl QemuOpts {
    fn base(name: &str, boot: Boot) -> QemuOpts {
        QemuOpts {
            name: name.to_string(),
            boot,
            nics: Vec::new(),
            memory_mb: 512,
            bios: None,
            pflash: Vec::new(),
            fw_cfg: Vec::new(),
            uuid: None,
            no_reboot: true,
            extra_args: Vec::new(),
            qemu: QEMU.to_string(),
            machine: "pc".to_string(),
        }
    }

    /// Debian's U-Boot for QEMU (`u-boot-qemu`) on a `virt` board, booting
    /// from one virtio-mmio NIC on tap `tap` ([`Nic::virtio_mmio`]): its
    /// autoboot runs U-Boot's distro boot (DHCP, then `boot.scr.uimg` from
    /// the next-server). `arch` is `aarch64` (`qemu_arm64/u-boot.bin` as
    /// `-bios`) or `riscv64` (OpenSBI's `fw_jump.elf` as `-bios`, U-Boot
    /// `qemu-riscv64_smode/uboot.elf` as `-kernel`).
    pub fn uboot(name: &str, arch: UbootArch, tap: &str, mac: &str) -> QemuOpts {
        let mut opts = QemuOpts::base(name, Boot::Firmware).with_nic(Nic::virtio_mmio(tap, mac));
        opts.machine = "virt".to_string();
        opts.qemu = arch.qemu().to_string();
        match arch {
            UbootArch::Aarch64 => {
                opts.bios = Some(PathBuf::from(UbootArch::AARCH64_UBOOT));
                opts.extra_args = vec!["-cpu".into(), "cortex-a57".into()];
            }
            UbootArch::Riscv64 => {
                opts.bios = Some(PathBuf::from(UbootArch::RISCV64_OPENSBI));
                opts.extra_args = vec!["-kernel".into(), UbootArch::RISCV64_UBOOT.into()];
            }
        }
        opts
    }

    /// Direct kernel boot without network: kernel command line
    /// `console=ttyS0 panic=-1 <extra_append>`.
    pub fn direct_kernel(
        name: &str,
        kernel: impl Into<PathBuf>,
        initrd: impl Into<PathBuf>,
        extra_append: &str,
    ) -> QemuOpts {
        let append = format!("console=ttyS0 panic=-1 {extra_append}")
            .trim_end()
            .to_string();
        QemuOpts::base(
            name,
            Boot::DirectKernel {
                kernel: kernel.into(),
                initrd: Some(initrd.into()),
                append,
            },
        )
    }

    /// Network boot (`-boot n`) from one e1000 NIC on tap device `tap`.
    pub fn network_boot(name: &str, tap: &str, mac: &str) -> QemuOpts {
        QemuOpts::base(name, Boot::Network).with_nic(Nic::e1000(tap, mac))
    }

    /// UEFI network boot: OVMF (`ovmf`'s code read-only, `vars` a writable
    /// copy of its variable store, see [`Ovmf::vars_copy`]) boots with its
    /// own EDK2 PXE stack from one virtio-net NIC without option ROM on tap
    /// device `tap` ([`Nic::virtio_firmware_pxe`]).
    pub fn uefi_network_boot(
        name: &str,
        tap: &str,
        mac: &str,
        ovmf: &Ovmf,
        vars: &Path,
    ) -> QemuOpts {
        let mut opts =
            QemuOpts::base(name, Boot::Network).with_nic(Nic::virtio_firmware_pxe(tap, mac));
        opts.pflash = ovmf.pflash(vars);
        opts
    }

    /// UEFI HTTP Boot: like [`QemuOpts::uefi_network_boot`], with OVMF's PXE
    /// boot options switched off ([`Ovmf::NO_PXE`]), so that the firmware's
    /// first boot option is "UEFI HTTPv4": DHCP with vendor class
    /// `HTTPClient` (arch 16), then the boot URI from the offer over HTTP.
    pub fn uefi_http_boot(name: &str, tap: &str, mac: &str, ovmf: &Ovmf, vars: &Path) -> QemuOpts {
        let mut opts = QemuOpts::uefi_network_boot(name, tap, mac, ovmf, vars);
        opts.fw_cfg.extend(
            Ovmf::NO_PXE
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        opts
    }

    /// Adds a NIC.
    pub fn with_nic(mut self, nic: Nic) -> QemuOpts {
        self.nics.push(nic);
        self
    }

    /// Appends raw QEMU arguments.
    pub fn with_args<I, S>(mut self, args: I) -> QemuOpts
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The QEMU arguments these options produce (without the binary).
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: &str| a.push(s.into());
        push("-accel");
        push("tcg");
        push("-machine");
        push(&self.machine);
        push("-m");
        push(&self.memory_mb.to_string());
        push("-nographic");
        push("-nodefaults");
        push("-serial");
        push("stdio");
        push("-name");
        push(&self.name);
        if self.no_reboot {
            push("-no-reboot");
        }
        if let Some(uuid) = &self.uuid {
            push("-uuid");
            push(uuid);
        }
        for (i, nic) in self.nics.iter().enumerate() {
            push("-netdev");
            push(&format!(
                "tap,id=n{i},ifname={},script=no,downscript=no",
                nic.tap
            ));
            let mut device = format!("{},netdev=n{i},mac={}", nic.model, nic.mac);
            if let Some(rom) = &nic.romfile {
                device.push_str(&format!(",romfile={rom}"));
            }
            if let Some(index) = nic.bootindex {
                device.push_str(&format!(",bootindex={index}"));
            }
            push("-device");
            push(&device);
        }
        if let Some(bios) = &self.bios {
            a.push("-bios".into());
            a.push(bios.into());
        }
        for (unit, flash) in self.pflash.iter().enumerate() {
            // In -drive option values a comma is written twice.
            let mut drive = OsString::from(format!("if=pflash,format=raw,unit={unit},"));
            if flash.readonly {
                drive.push("readonly=on,");
            }
            drive.push("file=");
            drive.push(flash.path.to_string_lossy().replace(',', ",,"));
            a.push("-drive".into());
            a.push(drive);
        }
        for (name, value) in &self.fw_cfg {
            a.push("-fw_cfg".into());
            a.push(
                format!(
                    "name={},string={}",
                    name.replace(',', ",,"),
                    value.replace(',', ",,")
                )
                .into(),
            );
        }
        match &self.boot {
            Boot::Firmware => {}
            Boot::Network => {
                a.push("-boot".into());
                a.push("n".into());
            }
            Boot::DirectKernel {
                kernel,
                initrd,
                append,
            } => {
                a.push("-kernel".into());
                a.push(kernel.into());
                if let Some(initrd) = initrd {
                    a.push("-initrd".into());
                    a.push(initrd.into());
                }
                a.push("-append".into());
                a.push(append.into());
            }
        }
        a.extend(self.extra_args.iter().map(OsString::from));
        a
    }

    fn check(&self) -> Result<()> {
        for nic in &self.nics {
            check_ifname(&nic.tap)?;
        }
        if let Boot::DirectKernel { kernel, initrd, .. } = &self.boot {
            ensure!(
                kernel.is_file(),
                "kernel {} does not exist",
                kernel.display()
            );
            if let Some(initrd) = initrd {
                ensure!(
                    initrd.is_file(),
                    "initrd {} does not exist",
                    initrd.display()
                );
            }
        }
        if matches!(self.boot, Boot::Network) {
            ensure!(!self.nics.is_empty(), "network boot needs at least one NIC");
        }
        for flash in &self.pflash {
            ensure!(
                flash.path.is_file(),
                "pflash image {} does not exist (UEFI firmware: apt-get install ovmf)",
                flash.path.display()
            );
        }
        ensure!(
            self.pflash.is_empty() || self.bios.is_none(),
            "guest {}: -bios and pflash firmware exclude each other",
            self.name
        );
        Ok(())
    }
}

/// Serial output shared between the reader threads and the test.
#[derive(Default)]
struct Console {
    /// Completed, cleaned lines.
    lines: Vec<String>,
    /// Raw bytes of the line being received.
    partial: Vec<u8>,
    /// QEMU's stderr (cleaned).
    stderr: String,
    /// stdout reached end of file (QEMU exited or closed it).
    eof: bool,
}

struct Shared {
    console: Mutex<Console>,
    changed: Condvar,
    file: Mutex<Option<File>>,
}

impl Shared {
    fn console(&self) -> MutexGuard<'_, Console> {
        self.console.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn save(&self, bytes: &[u8]) {
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = file.as_mut() {
            // The transcript file is a convenience; losing it is not fatal.
            let _ = f.write_all(bytes).and_then(|()| f.flush());
        }
    }
}

/// A running QEMU guest; killed on drop.
pub struct QemuGuest {
    child: Child,
    name: String,
    command: String,
    shared: Arc<Shared>,
    /// Index of the first line [`QemuGuest::wait_for_line`] looks at.
    cursor: usize,
    transcript_path: PathBuf,
    started: Instant,
    exit: Option<ExitStatus>,
}

impl std::fmt::Debug for QemuGuest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QemuGuest")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .field("transcript", &self.transcript_path)
            .finish_non_exhaustive()
    }
}

impl QemuGuest {
    /// Starts a guest in the host's network namespace. Only for guests
    /// without NICs (e.g. [`QemuOpts::direct_kernel`]): tap NICs must live in
    /// a test namespace, use [`QemuGuest::spawn_in`].
    pub fn spawn(opts: QemuOpts) -> Result<QemuGuest> {
        ensure!(
            opts.nics.is_empty(),
            "guest {} has NICs: start it with QemuGuest::spawn_in(netns, ..) so its taps stay out of the host",
            opts.name
        );
        let mut cmd = Command::new(&opts.qemu);
        cmd.args(opts.args());
        QemuGuest::start(cmd, &opts)
    }

    /// Starts a guest inside `netns`, where its NICs' tap devices must
    /// already exist ([`Netns::add_tap`], [`Netns::bridge_with_tap`]).
    pub fn spawn_in(netns: &Netns, opts: QemuOpts) -> Result<QemuGuest> {
        opts.check()?;
        for nic in &opts.nics {
            netns
                .ip(&["link", "show", "dev", &nic.tap])
                .with_context(|| {
                    format!(
                        "tap device {} of guest {} is not in namespace {}",
                        nic.tap,
                        opts.name,
                        netns.name()
                    )
                })?;
        }
        let mut cmd = netns.exec(&opts.qemu);
        cmd.args(opts.args());
        QemuGuest::start(cmd, &opts)
    }

    fn start(mut cmd: Command, opts: &QemuOpts) -> Result<QemuGuest> {
        opts.check()?;
        ensure!(
            crate::have_command(&opts.qemu),
            "{} not found on PATH (apt-get install qemu-system-x86 ipxe-qemu, or run tests/scripts/install-deps.sh)",
            opts.qemu
        );
        let command = display_command(&cmd);
        let dir = crate::artifacts::artifacts_dir()?.join("transcripts");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let safe_name: String = opts
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let transcript_path = dir.join(format!(
            "{safe_name}-{}-{}.log",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let mut file = File::create(&transcript_path)
            .with_context(|| format!("creating {}", transcript_path.display()))?;
        writeln!(file, "# {command}")?;

        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start `{command}`"))?;
        let stdout = child.stdout.take().context("QEMU stdout not piped")?;
        let stderr = child.stderr.take().context("QEMU stderr not piped")?;

        let shared = Arc::new(Shared {
            console: Mutex::new(Console::default()),
            changed: Condvar::new(),
            file: Mutex::new(Some(file)),
        });
        spawn_stdout_reader(Arc::clone(&shared), stdout)?;
        spawn_stderr_reader(Arc::clone(&shared), stderr)?;

        Ok(QemuGuest {
            child,
            name: opts.name.clone(),
            command,
            shared,
            cursor: 0,
            transcript_path,
            started: Instant::now(),
            exit: None,
        })
    }

    /// Waits until a console line containing `pattern` (plain substring)
    /// arrives, and returns that line.
    ///
    /// Lines are compared after removing terminal escape sequences and
    /// carriage returns. Each successful wait moves a cursor past the matched
    /// line, so consecutive waits check that lines come *in that order*; use
    /// [`QemuGuest::transcript_lines`] to look at everything.
    ///
    /// Fails when `timeout` passes or QEMU exits first, with the last lines
    /// of the console, QEMU's stderr and the transcript file's path.
    pub fn wait_for_line(&mut self, pattern: &str, timeout: Duration) -> Result<String> {
        self.wait_for_line_matching(&format!("a line containing {pattern:?}"), timeout, |l| {
            l.contains(pattern)
        })
    }

    /// Like [`QemuGuest::wait_for_line`] with any predicate; `what` describes
    /// it for error messages.
    pub fn wait_for_line_matching(
        &mut self,
        what: &str,
        timeout: Duration,
        mut matches: impl FnMut(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let mut console = self.shared.console();
        loop {
            if let Some(offset) = console.lines[self.cursor..].iter().position(|l| matches(l)) {
                let index = self.cursor + offset;
                self.cursor = index + 1;
                return Ok(console.lines[index].clone());
            }
            self.cursor = console.lines.len();
            let now = Instant::now();
            if console.eof || now >= deadline {
                let reason = if console.eof {
                    "QEMU exited (console closed)".to_string()
                } else {
                    format!("timed out after {timeout:?}")
                };
                let report = self.report(&console);
                drop(console);
                bail!(
                    "guest {}: {reason} before {what} ({:.1} s since start)\n{report}",
                    self.name,
                    self.started.elapsed().as_secs_f64()
                );
            }
            console = self
                .shared
                .changed
                .wait_timeout(console, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits up to `timeout` for QEMU to exit (e.g. after the guest powered
    /// off) and returns its exit status; fails on timeout.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let report = self.report(&self.shared.console());
                bail!(
                    "guest {}: QEMU still running after {timeout:?}\n{report}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// QEMU's exit status if it has exited, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.exit.is_none() {
            self.exit = self
                .child
                .try_wait()
                .with_context(|| format!("waiting for QEMU guest {}", self.name))?;
        }
        Ok(self.exit)
    }

    /// Kills QEMU (SIGKILL) and reaps it; a no-op if it has exited.
    pub fn kill(&mut self) -> Result<()> {
        if self.try_wait()?.is_none() {
            let _ = self.child.kill();
            self.exit = Some(
                self.child
                    .wait()
                    .with_context(|| format!("reaping QEMU guest {}", self.name))?,
            );
        }
        Ok(())
    }

    /// The whole console output so far, cleaned (escape sequences and
    /// carriage returns removed), including an unfinished last line.
    pub fn transcript(&self) -> String {
        let console = self.shared.console();
        let mut text = console.lines.join("\n");
        if !console.partial.is_empty() {
            text.push('\n');
            text.push_str(&clean_line(&console.partial));
        }
        text
    }

    /// All complete console lines so far, cleaned.
    pub fn transcript_lines(&self) -> Vec<String> {
        self.shared.console().lines.clone()
    }

    /// QEMU's stderr so far.
    pub fn stderr(&self) -> String {
        self.shared.console().stderr.clone()
    }

    /// File receiving the raw console output (and QEMU's stderr, prefixed
    /// `[qemu stderr]`) as it arrives; kept after the test.
    pub fn transcript_path(&self) -> &Path {
        &self.transcript_path
    }

    /// Time since QEMU was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The guest's name ([`QemuOpts::name`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// QEMU's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn report(&self, console: &Console) -> String {
        let start = console.lines.len().saturating_sub(TAIL_LINES);
        let mut tail = console.lines[start..].join("\n");
        if !console.partial.is_empty() {
            tail.push('\n');
            tail.push_str(&clean_line(&console.partial));
            tail.push_str("  <no newline yet>");
        }
        format!(
            "--- last {} console lines ---\n{tail}\n--- qemu stderr ---\n{}\n--- full transcript: {} ---\ncommand: {}",
            console.lines.len() - start,
            console.stderr.trim_end(),
            self.transcript_path.display(),
            self.command
        )
    }
}

impl Drop for QemuGuest {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

fn spawn_stdout_reader(shared: Arc<Shared>, mut stdout: impl Read + Send + 'static) -> Result<()> {
    std::thread::Builder::new()
        .name("qemu-console".to_string())
        .spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                shared.save(&buf[..n]);
                let mut console = shared.console();
                for &b in &buf[..n] {
                    if b == b'\n' {
                        let line = clean_line(&console.partial);
                        console.partial.clear();
                        console.lines.push(line);
                    } else {
                        console.partial.push(b);
                    }
                }
                drop(console);
                shared.changed.notify_all();
            }
            let mut console = shared.console();
            if !console.partial.is_empty() {
                let line = clean_line(&console.partial);
                console.partial.clear();
                console.lines.push(line);
            }
            console.eof = true;
            drop(console);
            shared.changed.notify_all();
        })
        .context("starting the console reader thread")?;
    Ok(())
}

fn spawn_stderr_reader(shared: Arc<Shared>, mut stderr: impl Read + Send + 'static) -> Result<()> {
    std::thread::Builder::new()
        .name("qemu-stderr".to_string())
        .spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = match stderr.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let mut prefixed = String::new();
                for line in text.split_inclusive('\n') {
                    prefixed.push_str("[qemu stderr] ");
                    prefixed.push_str(line);
                }
                shared.save(prefixed.as_bytes());
                shared.console().stderr.push_str(&text);
                shared.changed.notify_all();
            }
        })
        .context("starting the stderr reader thread")?;
    Ok(())
}

/// Removes terminal escape sequences (CSI `ESC [ ... final`, and two-byte
/// `ESC x`), carriage returns and other control characters (tab excepted)
/// from one raw console line; a backspace deletes the character before it.
pub fn clean_line(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: parameters and intermediates, then one final byte.
                // Any other escape is two bytes long.
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
            }
            // Backspace moves the cursor back; what follows overwrites
            // (iPXE's countdown is "\x08 \x08" repeated): drop a char.
            '\u{8}' => {
                out.pop();
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_line_strips_escapes() {
        assert_eq!(
            clean_line(b"\x1bc\x1b[?7l\x1b[2JRACKBOOT-KERNEL: 6.1\r"),
            "RACKBOOT-KERNEL: 6.1"
        );
        assert_eq!(clean_line(b"a\tb\x1b[0;1mc"), "a\tbc");
        assert_eq!(clean_line(b"trailing esc\x1b"), "trailing esc");
        assert_eq!(
            clean_line(b"Press Ctrl-B...\x08 \x08\x08 \x08net0: up\r"),
            "Press Ctrl-B.net0: up"
        );
    }

    #[test]
    fn args_direct_kernel() {
        let opts = QemuOpts::direct_kernel("t", "/k", "/i", "quiet");
        let args: Vec<String> = opts
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(
            joined
                .starts_with("-accel tcg -machine pc -m 512 -nographic -nodefaults -serial stdio")
        );
        assert!(joined.contains("-no-reboot"));
        assert!(joined.ends_with("-kernel /k -initrd /i -append console=ttyS0 panic=-1 quiet"));
        assert!(!joined.contains("-netdev"));
    }

    #[test]
    fn args_network_boot() {
        let mut opts = QemuOpts::network_boot("n", "tap0", "52:54:00:00:00:01");
        opts.uuid = Some("11111111-2222-3333-4444-555555555555".to_string());
        let joined: Vec<String> = opts
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = joined.join(" ");
        assert!(joined.contains(
            "-netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device e1000,netdev=n0,mac=52:54:00:00:00:01"
        ));
        assert!(joined.contains("-uuid 11111111-2222-3333-4444-555555555555"));
        assert!(joined.ends_with("-boot n"));
    }

    #[test]
    fn args_uefi_network_boot() {
        let ovmf = Ovmf {
            code: PathBuf::from("/fw/CODE.fd"),
            vars_template: PathBuf::from("/fw/VARS.fd"),
        };
        let opts = QemuOpts::uefi_network_boot(
            "u",
            "tap0",
            "52:54:00:00:00:02",
            &ovmf,
            Path::new("/tmp/a,b/VARS.fd"),
        );
        let joined: Vec<String> = opts
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = joined.join(" ");
        assert!(joined.contains(
            "-device virtio-net-pci,netdev=n0,mac=52:54:00:00:00:02,romfile=,bootindex=1"
        ));
        assert!(joined.contains(
            "-drive if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd \
             -drive if=pflash,format=raw,unit=1,file=/tmp/a,,b/VARS.fd"
        ));
        assert!(!joined.contains("-bios"));
        assert!(!joined.contains("-fw_cfg"));
        let http =
            QemuOpts::uefi_http_boot("h", "tap0", "52:54:00:00:00:03", &ovmf, Path::new("/v"));
        let joined: Vec<String> = http
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = joined.join(" ");
        assert!(joined.contains(
            "-fw_cfg name=opt/org.tianocore/IPv4PXESupport,string=no \
             -fw_cfg name=opt/org.tianocore/IPv6PXESupport,string=no"
        ));
    }

    #[test]
    fn spawn_refuses_nics_in_host_namespace() {
        let opts = QemuOpts::network_boot("n", "tap0", "52:54:00:00:00:01");
        let err = QemuGuest::spawn(opts).expect_err("host-namespace NICs must be refused");
        assert!(format!("{err}").contains("spawn_in"));
    }
}
