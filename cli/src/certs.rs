//! `rackboot certs`: a cluster certificate authority and the certificates
//! of coordinators, agents (bound to one rack) and admins, as PEM files.
//!
//! Every certificate's subject says who it is for: organizational unit
//! `coordinator`, `agent` or `admin`, and common name the replica, the rack
//! or the admin's name. Leaf certificates are valid for TLS server and
//! client authentication, so a coordinator's serves gRPC and also
//! authenticates it to its peers.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Arguments of `certs`.
#[derive(clap::Subcommand, Debug)]
pub enum CertsCmd {
    /// Create the cluster CA in DIR (`ca.pem`, `ca.key`, `ca.name`).
    Init {
        /// Directory for the CA (created; its key is written 0600).
        #[arg(long)]
        dir: PathBuf,
        /// Cluster name, in the CA's subject.
        #[arg(long, default_value = "rackboot")]
        cluster: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: i64,
    },
    /// Issue a certificate signed by the CA in DIR: `NAME.pem` and `NAME.key`
    /// (NAME: the replica name, `agent-RACK`, or the admin's name).
    Issue {
        /// coordinator, agent or admin.
        #[arg(value_enum)]
        role: Role,
        /// The CA directory (`certs init`).
        #[arg(long)]
        dir: PathBuf,
        /// Coordinator replica or admin name (not for agents).
        #[arg(long, required_unless_present = "rack")]
        name: Option<String>,
        /// The agent's rack: the certificate works only for that rack.
        #[arg(long)]
        rack: Option<String>,
        /// An address the coordinator is reached at (repeat).
        #[arg(long = "ip")]
        ips: Vec<IpAddr>,
        /// A DNS name the coordinator is reached at (repeat).
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: i64,
        /// Where to write (default: DIR).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Who a certificate is for.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A coordinator replica (server, and client to its peers).
    Coordinator,
    /// A rack agent (client; bound to its rack).
    Agent,
    /// An administrator (client).
    Admin,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Agent => "agent",
            Role::Admin => "admin",
        }
    }
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days.max(1));
}

fn ca_params(cluster: &str, days: i64) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "rackboot");
    dn.push(DnType::CommonName, format!("rackboot CA {cluster}"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut p, days);
    p
}

fn write(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Run `certs`.
pub fn run(cmd: CertsCmd) -> anyhow::Result<()> {
    match cmd {
        CertsCmd::Init { dir, cluster, days } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let key = KeyPair::generate().context("generating the CA key")?;
            let cert = ca_params(&cluster, days)
                .self_signed(&key)
                .context("signing the CA certificate")?;
            write(&dir.join("ca.key"), &key.serialize_pem(), true)?;
            write(&dir.join("ca.pem"), &cert.pem(), false)?;
            write(&dir.join("ca.name"), &format!("{cluster}\n"), false)?;
            say!(
                "cluster CA {cluster:?} in {}: ca.pem (give it to every coordinator, agent and admin), ca.key (keep it offline)",
                dir.display()
            );
            Ok(())
        }
        CertsCmd::Issue {
            role,
            dir,
            name,
            rack,
            ips,
            dns,
            days,
            out,
        } => {
            let cluster = std::fs::read_to_string(dir.join("ca.name")).with_context(|| {
                format!(
                    "reading {}/ca.name (run `rackboot certs init` first)",
                    dir.display()
                )
            })?;
            let ca_key_pem = std::fs::read_to_string(dir.join("ca.key"))
                .with_context(|| format!("reading {}/ca.key", dir.display()))?;
            let ca_key = KeyPair::from_pem(&ca_key_pem).context("reading the CA key")?;
            let issuer = Issuer::new(ca_params(cluster.trim(), 1), ca_key);
            let cn = match (role, &name, &rack) {
                (Role::Agent, _, Some(r)) => r.clone(),
                (Role::Agent, _, None) => anyhow::bail!("an agent certificate needs --rack RACK"),
                (_, Some(n), None) => n.clone(),
                (_, _, Some(_)) => anyhow::bail!("--rack is for agent certificates"),
                (_, None, None) => anyhow::bail!("--name NAME is needed"),
            };
            anyhow::ensure!(
                !cn.is_empty()
                    && cn
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
                "name {cn:?}: letters, digits, . _ - only"
            );
            let mut p = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::OrganizationName, "rackboot");
            dn.push(DnType::OrganizationalUnitName, role.name());
            dn.push(DnType::CommonName, cn.clone());
            p.distinguished_name = dn;
            p.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            p.use_authority_key_identifier_extension = true;
            for ip in ips {
                p.subject_alt_names.push(SanType::IpAddress(ip));
            }
            if role == Role::Coordinator {
                // What clients check a coordinator by (rackboot_proto::tls).
                p.subject_alt_names.push(SanType::DnsName(
                    rackboot_proto::tls::COORDINATOR_SERVER_NAME
                        .try_into()
                        .context("the coordinator role name")?,
                ));
            }
            for d in dns {
                p.subject_alt_names.push(SanType::DnsName(
                    d.try_into()
                        .context("a --dns name is not a valid DNS name")?,
                ));
            }
            validity(&mut p, days);
            let key = KeyPair::generate().context("generating the key")?;
            let cert = p
                .signed_by(&key, &issuer)
                .context("signing the certificate")?;
            let out = out.unwrap_or(dir);
            let base = match role {
                Role::Agent => format!("agent-{cn}"),
                _ => cn.clone(),
            };
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            write(&out.join(format!("{base}.key")), &key.serialize_pem(), true)?;
            write(&out.join(format!("{base}.pem")), &cert.pem(), false)?;
            say!(
                "{} certificate for {cn:?}: {}/{base}.pem and {base}.key",
                role.name(),
                out.display()
            );
            Ok(())
        }
    }
}
