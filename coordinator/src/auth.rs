//! Who may call what, from the client certificate (mutual TLS).
//!
//! `rackboot certs` writes the role into the certificate's subject:
//! organizational unit `admin`, `agent` or `coordinator`, common name the
//! admin's or replica's name, or the agent's rack. With TLS on, every gRPC
//! service is wrapped in an [`Authorizer`] that reads the peer certificate
//! (already verified against the cluster CA by rustls) and lets through only
//! the roles the service is for:
//!
//! | service | roles |
//! |---|---|
//! | Node, Rack, Image, Assignment, Meta | admin |
//! | Cluster | admin, coordinator |
//! | Agent | agent — and only for its own rack ([`check_rack`]) |
//! | RaftPeer, BlobPeer | coordinator |
//! | health, reflection | any certificate of the CA |
//!
//! A refused call gets `PERMISSION_DENIED` naming the certificate and what it
//! may call; a call without a usable certificate `UNAUTHENTICATED`. Without
//! TLS (the explicit plaintext mode) nothing is checked.

use std::sync::Arc;

use tonic::{Request, Status};

/// A certificate's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An administrator (the CLI).
    Admin,
    /// A rack agent; its identity is its rack.
    Agent,
    /// A coordinator replica.
    Coordinator,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Agent => "agent",
            Role::Coordinator => "coordinator",
        }
    }
}

/// The authenticated caller, put into the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its role.
    pub role: Role,
    /// Its name: the admin or replica name, or the agent's rack.
    pub name: String,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.role {
            Role::Agent => write!(f, "agent certificate of rack {}", self.name),
            r => write!(f, "{} certificate {:?}", r.name(), self.name),
        }
    }
}

/// Read the role and name from a certificate (DER).
pub fn peer_from_der(der: &[u8]) -> Result<Peer, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("unreadable client certificate: {e}"))?;
    let subject = cert.subject();
    let first = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
        it.next().and_then(|a| a.as_str().ok()).map(str::to_string)
    };
    let ou = first(&mut subject.iter_organizational_unit());
    let cn = first(&mut subject.iter_common_name());
    let role = match ou.as_deref() {
        Some("admin") => Role::Admin,
        Some("agent") => Role::Agent,
        Some("coordinator") => Role::Coordinator,
        other => {
            return Err(format!(
                "client certificate has no rackboot role (organizational unit {other:?}; issue one with `rackboot certs issue`)"
            ));
        }
    };
    let name = cn
        .filter(|n| !n.is_empty())
        .ok_or_else(|| "client certificate has no common name".to_string())?;
    Ok(Peer { role, name })
}

/// An interceptor letting through the roles a service is for.
#[derive(Debug, Clone)]
pub struct Authorizer {
    service: &'static str,
    allowed: &'static [Role],
    tls: bool,
    denied: Arc<std::sync::atomic::AtomicU64>,
}

/// Roles of the admin services.
pub const ADMIN: &[Role] = &[Role::Admin];
/// Roles of the cluster service.
pub const CLUSTER: &[Role] = &[Role::Admin, Role::Coordinator];
/// Roles of the agent service.
pub const AGENT: &[Role] = &[Role::Agent];
/// Roles of the replica-to-replica services.
pub const PEER: &[Role] = &[Role::Coordinator];
/// Any role (health, reflection).
pub const ANY: &[Role] = &[Role::Admin, Role::Agent, Role::Coordinator];

impl Authorizer {
    /// For `service`, letting `allowed` through when `tls` is on; refusals
    /// are counted in `denied`.
    pub fn new(
        service: &'static str,
        allowed: &'static [Role],
        tls: bool,
        denied: Arc<std::sync::atomic::AtomicU64>,
    ) -> Self {
        Authorizer {
            service,
            allowed,
            tls,
            denied,
        }
    }

    /// Check a request's certificate.
    pub fn check<T>(&self, mut req: Request<T>) -> Result<Request<T>, Status> {
        if !self.tls {
            return Ok(req);
        }
        let refuse = |s: Status| {
            self.denied
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err(s)
        };
        let Some(certs) = req.peer_certs() else {
            return refuse(Status::unauthenticated(format!(
                "{}: a client certificate of the cluster CA is required",
                self.service
            )));
        };
        let Some(leaf) = certs.first() else {
            return refuse(Status::unauthenticated(format!(
                "{}: a client certificate of the cluster CA is required",
                self.service
            )));
        };
        let peer = match peer_from_der(leaf.as_ref()) {
            Ok(p) => p,
            Err(e) => return refuse(Status::unauthenticated(format!("{}: {e}", self.service))),
        };
        if !self.allowed.contains(&peer.role) {
            let roles: Vec<&str> = self.allowed.iter().map(|r| r.name()).collect();
            return refuse(Status::permission_denied(format!(
                "{peer} may not call {}: it is for {} certificates",
                self.service,
                roles.join(" and ")
            )));
        }
        req.extensions_mut().insert(peer);
        Ok(req)
    }
}

impl tonic::service::Interceptor for Authorizer {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        self.check(req)
    }
}

/// An agent may act only for its own rack: with an agent certificate, the
/// request's rack must be the certificate's.
pub fn check_rack(ext: &tonic::Extensions, rack: &str) -> Result<(), Status> {
    match ext.get::<Peer>() {
        Some(p) if p.role == Role::Agent && p.name != rack => Err(Status::permission_denied(
            format!("{p} may not act for rack {rack}"),
        )),
        _ => Ok(()),
    }
}

/// The agent certificate's rack, if the caller has one.
pub fn agent_rack(ext: &tonic::Extensions) -> Option<&str> {
    ext.get::<Peer>()
        .filter(|p| p.role == Role::Agent)
        .map(|p| p.name.as_str())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cert(ou: Option<&str>, cn: &str) -> Vec<u8> {
        let mut p = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "rackboot");
        if let Some(ou) = ou {
            dn.push(rcgen::DnType::OrganizationalUnitName, ou);
        }
        dn.push(rcgen::DnType::CommonName, cn);
        p.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn roles_come_from_the_subject() {
        assert_eq!(
            peer_from_der(&cert(Some("agent"), "r7")).unwrap(),
            Peer {
                role: Role::Agent,
                name: "r7".into()
            }
        );
        assert_eq!(
            peer_from_der(&cert(Some("admin"), "ops")).unwrap().role,
            Role::Admin
        );
        assert!(peer_from_der(&cert(None, "x")).is_err());
        assert!(peer_from_der(&cert(Some("root"), "x")).is_err());
        assert!(peer_from_der(b"not a certificate").is_err());
    }

    #[test]
    fn an_agent_acts_only_for_its_rack() {
        let mut ext = tonic::Extensions::new();
        assert!(
            check_rack(&ext, "r1").is_ok(),
            "no certificate: plaintext mode"
        );
        ext.insert(Peer {
            role: Role::Agent,
            name: "r1".into(),
        });
        assert!(check_rack(&ext, "r1").is_ok());
        let e = check_rack(&ext, "r2").unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("rack r1") && e.message().contains("r2"));
    }

    #[test]
    fn without_tls_nothing_is_checked_with_tls_a_certificate_is_needed() {
        let denied = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let off = Authorizer::new("NodeService", ADMIN, false, denied.clone());
        assert!(off.check(Request::new(())).is_ok());
        let on = Authorizer::new("NodeService", ADMIN, true, denied.clone());
        let e = on.check(Request::new(())).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert_eq!(denied.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
