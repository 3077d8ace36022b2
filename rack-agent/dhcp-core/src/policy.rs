//! How the agent takes part in DHCP on its rack ([`DhcpMode`]) and when it
//! asks the coordinator to number a machine ([`AcceptPolicy`]). Plain enums
//! with their operator-facing names; command-line and file parsing use
//! [`FromStr`] and `NAMES`.

use std::fmt;
use std::str::FromStr;

/// A name that is none of an enum's `NAMES`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{given:?} is not one of: {}", allowed.join(", "))]
pub struct UnknownName {
    /// What was given.
    pub given: String,
    /// The names allowed.
    pub allowed: &'static [&'static str],
}

macro_rules! named_enum {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value's name, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            /// Its operator-facing name.
            pub const fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    _ => Err(UnknownName {
                        given: s.to_string(),
                        allowed: Self::NAMES,
                    }),
                }
            }
        }
    };
}

/// When the agent asks the coordinator to number a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptPolicy {
    /// On its first DHCP request: quick, but a machine with two NICs that
    /// PXE boots from both becomes two nodes, and a flood of random MACs
    /// fills the rack.
    FirstSeen,
    /// Only from a probe report (`rackboot probe` in the discovery image,
    /// with every MAC of the machine); until then the machine holds a
    /// provisional lease (`--provisional-range`).
    Probe,
    /// Like `probe`, but the coordinator holds the machine until an operator
    /// runs `rackboot node accept MAC`.
    Manual,
}

named_enum!(AcceptPolicy {
    FirstSeen => "first-seen",
    Probe => "probe",
    Manual => "manual",
});

/// How the agent takes part in DHCP on its rack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhcpMode {
    /// The agent is the rack's DHCP server: addresses follow node numbers.
    /// Relayed requests (giaddr, option 82) are answered to the relay.
    Authoritative,
    /// proxyDHCP beside a site DHCP server: boot information only, on 67
    /// and on the PXE boot server port 4011.
    Proxy,
}

named_enum!(DhcpMode {
    Authoritative => "authoritative",
    Proxy => "proxy",
});

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_list_the_allowed() {
        for n in AcceptPolicy::NAMES {
            assert_eq!(n.parse::<AcceptPolicy>().map(AcceptPolicy::name), Ok(*n));
        }
        for n in DhcpMode::NAMES {
            assert_eq!(
                n.parse::<DhcpMode>().map(|m| m.to_string()),
                Ok(n.to_string())
            );
        }
        let e = "firstseen".parse::<AcceptPolicy>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"firstseen\" is not one of: first-seen, probe, manual"
        );
    }
}
