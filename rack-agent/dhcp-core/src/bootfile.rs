//! Boot file selection: a pure function of the configured [`BootFiles`] and
//! what the client said about itself.
//!
//! Order of precedence:
//! 1. user class `iPXE` → the iPXE script, so iPXE gets its script and does
//!    not chainload itself forever;
//! 2. vendor class `HTTPClient` → the HTTP boot URI (none if unconfigured);
//! 3. vendor class `U-Boot…` → the U-Boot boot script (U-Boot's distro
//!    boot asks for it by name anyway; offering it serves a plain `dhcp`);
//! 4. vendor class `PXEClient`, or a BOOTP request → the firmware file for
//!    the architecture (option 93, else the vendor class `Arch:` field, else
//!    x86 BIOS, the only kind of client that predates option 93);
//! 5. anything else is the OS doing plain DHCP after boot: no boot file.

use crate::client::{Arch, ClientInfo};
use crate::config::BootFiles;
use crate::mac::Mac;

/// The outcome of boot file selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootChoice {
    /// Not a network-boot request (plain OS DHCP): no boot file, no 66/67.
    NotBoot,
    /// iPXE is running: its script (path or URL).
    IpxeScript(String),
    /// UEFI HTTP Boot: the boot URI.
    HttpBoot(String),
    /// UEFI HTTP Boot client, but no boot URI is configured.
    HttpBootUnconfigured,
    /// U-Boot's DHCP client: its boot script image.
    UbootScript(String),
    /// A PXE ROM (or BOOTP client): the firmware file fetched over TFTP.
    Firmware {
        /// The architecture the file was chosen for.
        arch: Arch,
        /// File name relative to the TFTP root.
        file: String,
    },
    /// A PXE ROM whose architecture has no configured file.
    UnsupportedArch(Arch),
}

impl BootChoice {
    /// The boot file to put in option 67 and the `file` field, if any.
    pub fn file(&self) -> Option<&str> {
        match self {
            BootChoice::IpxeScript(f) | BootChoice::HttpBoot(f) | BootChoice::UbootScript(f) => {
                Some(f)
            }
            BootChoice::Firmware { file, .. } => Some(file),
            BootChoice::NotBoot
            | BootChoice::HttpBootUnconfigured
            | BootChoice::UnsupportedArch(_) => None,
        }
    }
}

/// Choose the boot file for `client` (see the module docs for the order).
pub fn select(boot: &BootFiles, client: &ClientInfo) -> BootChoice {
    let configured = |t: &str| (!t.is_empty()).then(|| expand(t, &client.mac));
    if client.is_ipxe() {
        return match configured(&boot.ipxe_script) {
            Some(script) => BootChoice::IpxeScript(script),
            None => BootChoice::NotBoot,
        };
    }
    if client.is_http_client() {
        return match boot.http_boot_uri.as_deref().and_then(configured) {
            Some(uri) => BootChoice::HttpBoot(uri),
            None => BootChoice::HttpBootUnconfigured,
        };
    }
    if client.is_uboot() {
        return match configured(&boot.uboot_script) {
            Some(script) => BootChoice::UbootScript(script),
            None => BootChoice::NotBoot,
        };
    }
    if !client.is_pxe() && !client.is_bootp() {
        return BootChoice::NotBoot;
    }
    let arch = client.arch.unwrap_or(Arch::X86Bios);
    let template = match arch {
        Arch::X86Bios => &boot.bios,
        Arch::EfiX64 | Arch::EfiBc => &boot.uefi_x64,
        Arch::EfiArm64 => &boot.uefi_arm64,
        _ => return BootChoice::UnsupportedArch(arch),
    };
    match configured(template) {
        Some(file) => BootChoice::Firmware { arch, file },
        None => BootChoice::UnsupportedArch(arch),
    }
}

/// Replace every `{mac}` in `template` with the hyphenated lowercase MAC.
pub fn expand(template: &str, mac: &Mac) -> String {
    template.replace("{mac}", &mac.hyphenated())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = Mac([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);

    fn files(http: Option<&str>) -> BootFiles {
        BootFiles {
            bios: "undionly.kpxe".into(),
            uefi_x64: "ipxe.efi".into(),
            uefi_arm64: "ipxe-arm64.efi".into(),
            ipxe_script: "http://10.0.0.1:8080/ipxe/{mac}.ipxe".into(),
            http_boot_uri: http.map(Into::into),
            uboot_script: "boot.scr.uimg".into(),
        }
    }

    fn client(arch: Option<u16>, vendor: Option<&str>, user: &[&str], bootp: bool) -> ClientInfo {
        let mut c = ClientInfo::new(MAC);
        c.arch = arch.map(Arch::from);
        c.vendor_class = vendor.map(Into::into);
        c.user_class = user.iter().map(|s| (*s).to_owned()).collect();
        if bootp {
            c.message_type = None;
        }
        c
    }

    const PXE: Option<&str> = Some("PXEClient:Arch:00000:UNDI:002001");
    const HTTP: Option<&str> = Some("HTTPClient:Arch:00016:UNDI:003001");
    const OS: Option<&str> = Some("udhcp 1.36.1");
    const UBOOT: Option<&str> = Some("U-Boot.armv8");
    const UBOOT_RV: Option<&str> = Some("U-Boot");
    const UBOOT_EFI: Option<&str> = Some("PXEClient:Arch:00011:UNDI:003000");
    const SCRIPT: &str = "http://10.0.0.1:8080/ipxe/52-54-00-ab-cd-ef.ipxe";
    const URI: &str = "http://10.0.0.1:8080/boot/52-54-00-ab-cd-ef.efi";

    fn fw(arch: u16, file: &str) -> BootChoice {
        BootChoice::Firmware {
            arch: Arch::from(arch),
            file: file.into(),
        }
    }

    /// arch, vendor class, user classes, BOOTP?, HTTP boot URI, expected.
    type Row = (
        Option<u16>,
        Option<&'static str>,
        &'static [&'static str],
        bool,
        Option<&'static str>,
        BootChoice,
    );

    /// Golden table: arch × vendor class × user class (× BOOTP).
    #[test]
    fn golden_table() {
        let http_cfg = Some("http://10.0.0.1:8080/boot/{mac}.efi");
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            // arch,    vendor, user,      bootp, http cfg, expected
            (Some(0),  PXE,  &[],          false, None,     fw(0, "undionly.kpxe")),
            (Some(7),  PXE,  &[],          false, None,     fw(7, "ipxe.efi")),
            (Some(9),  PXE,  &[],          false, None,     fw(9, "ipxe.efi")),
            (Some(11), PXE,  &[],          false, None,     fw(11, "ipxe-arm64.efi")),
            (Some(6),  PXE,  &[],          false, None,     BootChoice::UnsupportedArch(Arch::EfiIa32)),
            (Some(10), PXE,  &[],          false, None,     BootChoice::UnsupportedArch(Arch::EfiArm32)),
            (Some(42), PXE,  &[],          false, None,     BootChoice::UnsupportedArch(Arch::Other(42))),
            (None,     PXE,  &[],          false, None,     fw(0, "undionly.kpxe")),
            // iPXE wins over arch and vendor class: no chainload loop.
            (Some(0),  PXE,  &["iPXE"],    false, None,     BootChoice::IpxeScript(SCRIPT.into())),
            (Some(7),  PXE,  &["iPXE"],    false, None,     BootChoice::IpxeScript(SCRIPT.into())),
            (Some(11), PXE,  &["iPXE"],    false, None,     BootChoice::IpxeScript(SCRIPT.into())),
            (None,     None, &["iPXE"],    false, None,     BootChoice::IpxeScript(SCRIPT.into())),
            (Some(7),  PXE,  &["x", "iPXE"], false, None,   BootChoice::IpxeScript(SCRIPT.into())),
            (Some(7),  PXE,  &["ipxe"],    false, None,     fw(7, "ipxe.efi")),
            (Some(7),  PXE,  &["gPXE"],    false, None,     fw(7, "ipxe.efi")),
            // UEFI HTTP Boot.
            (Some(16), HTTP, &[],          false, http_cfg, BootChoice::HttpBoot(URI.into())),
            (Some(19), HTTP, &[],          false, http_cfg, BootChoice::HttpBoot(URI.into())),
            (Some(16), HTTP, &[],          false, None,     BootChoice::HttpBootUnconfigured),
            (Some(16), HTTP, &["iPXE"],    false, http_cfg, BootChoice::IpxeScript(SCRIPT.into())),
            // Plain OS DHCP after boot: no boot file whatever the arch says.
            (None,     None, &[],          false, http_cfg, BootChoice::NotBoot),
            (None,     OS,   &[],          false, http_cfg, BootChoice::NotBoot),
            (Some(7),  OS,   &[],          false, http_cfg, BootChoice::NotBoot),
            (Some(7),  None, &[],          false, http_cfg, BootChoice::NotBoot),
            // U-Boot (arm64 sends arch 22, riscv64 none): its boot script;
            // its EFI step announces itself as an arm64 UEFI PXE client.
            (Some(22), UBOOT, &[],         false, None,     BootChoice::UbootScript("boot.scr.uimg".into())),
            (None,     UBOOT_RV, &[],      false, None,     BootChoice::UbootScript("boot.scr.uimg".into())),
            (Some(11), UBOOT_EFI, &[],     false, None,     fw(11, "ipxe-arm64.efi")),
            // BOOTP: a boot ROM by definition.
            (None,     None, &[],          true,  None,     fw(0, "undionly.kpxe")),
            (Some(7),  None, &[],          true,  None,     fw(7, "ipxe.efi")),
        ];
        for (i, (arch, vendor, user, bootp, http, want)) in table.into_iter().enumerate() {
            let got = select(&files(http), &client(arch, vendor, user, bootp));
            assert_eq!(
                got, want,
                "row {i}: arch {arch:?} vendor {vendor:?} user {user:?}"
            );
        }
    }

    #[test]
    fn empty_entries_are_not_offered() {
        let mut f = files(Some(""));
        f.uefi_arm64.clear();
        f.ipxe_script.clear();
        let c = client(Some(11), PXE, &[], false);
        assert_eq!(select(&f, &c), BootChoice::UnsupportedArch(Arch::EfiArm64));
        let c = client(Some(16), HTTP, &[], false);
        assert_eq!(select(&f, &c), BootChoice::HttpBootUnconfigured);
        let c = client(Some(0), PXE, &["iPXE"], false);
        assert_eq!(select(&f, &c), BootChoice::NotBoot);
    }

    #[test]
    fn template_expansion() {
        assert_eq!(
            expand("ipxe/{mac}.ipxe", &MAC),
            "ipxe/52-54-00-ab-cd-ef.ipxe"
        );
        assert_eq!(
            expand("{mac}/{mac}", &MAC),
            "52-54-00-ab-cd-ef/52-54-00-ab-cd-ef"
        );
        assert_eq!(expand("plain.efi", &MAC), "plain.efi");
    }

    #[test]
    fn file_accessor() {
        assert_eq!(fw(0, "a").file(), Some("a"));
        assert_eq!(BootChoice::IpxeScript("s".into()).file(), Some("s"));
        assert_eq!(BootChoice::NotBoot.file(), None);
        assert_eq!(BootChoice::UnsupportedArch(Arch::EfiIa32).file(), None);
    }
}
