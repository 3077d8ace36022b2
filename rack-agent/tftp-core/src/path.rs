//! Validated, normalized request paths.
//!
//! Every file name a client asks for becomes a [`SafePath`] before anything
//! else sees it, so a [`crate::FileSource`] never handles raw client text.
//!
//! Normalization (documented policy):
//! - the path is split on `/`; empty components are dropped, so a leading
//!   `/` (grub asks for `/vmlinuz`), a trailing `/` and runs like `a//b` all
//!   collapse: `/vmlinuz`, `//vmlinuz` and `vmlinuz` are the same file;
//! - `.` components are dropped (`./a/./b` is `a/b`);
//! - the result is relative, `/`-separated, non-empty, printable ASCII.
//!
//! Refused outright (no attempt to "fix" them): `..` components, NUL and
//! other control characters, non-ASCII, backslashes, any `%` (so no
//! percent-encoded `%2e%2e` can be decoded into a traversal later), a
//! Windows drive prefix (`C:`), and anything longer than
//! [`MAX_PATH_LEN`] bytes before normalization.

use std::fmt;

/// Longest path accepted, in bytes, before normalization.
pub const MAX_PATH_LEN: usize = 255;

/// A request path that is safe to look up: relative, normalized, with no
/// way to escape the served root.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SafePath(String);

/// Why a requested path was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Nothing left after normalization.
    #[error("empty path")]
    Empty,
    /// Longer than [`MAX_PATH_LEN`].
    #[error("path is {len} bytes long, the limit is {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Contains a NUL byte.
    #[error("path contains NUL")]
    Nul,
    /// Contains a control character other than NUL.
    #[error("path contains control character {0:#04x}")]
    ControlChar(u8),
    /// Contains a non-ASCII character.
    #[error("path contains non-ASCII character {0:?}")]
    NonAscii(char),
    /// Contains a backslash.
    #[error("path contains a backslash")]
    Backslash,
    /// Contains `%` (percent-encoding is never decoded, so never accepted).
    #[error("path contains '%'")]
    Percent,
    /// Starts with a Windows drive letter such as `C:`.
    #[error("path starts with a drive letter")]
    DriveLetter,
    /// Has a `..` component.
    #[error("path has a '..' component")]
    ParentDir,
}

impl SafePath {
    /// Validates and normalizes a requested path.
    pub fn parse(raw: &str) -> Result<SafePath, PathError> {
        if raw.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong {
                len: raw.len(),
                max: MAX_PATH_LEN,
            });
        }
        for c in raw.chars() {
            match c {
                '\0' => return Err(PathError::Nul),
                '\\' => return Err(PathError::Backslash),
                '%' => return Err(PathError::Percent),
                c if !c.is_ascii() => return Err(PathError::NonAscii(c)),
                c if c.is_ascii_control() => return Err(PathError::ControlChar(c as u8)),
                _ => {}
            }
        }
        let trimmed = raw.trim_start_matches('/');
        if matches!(trimmed.as_bytes(), [drive, b':', ..] if drive.is_ascii_alphabetic()) {
            return Err(PathError::DriveLetter);
        }
        let mut normalized = String::with_capacity(raw.len());
        for component in raw.split('/') {
            match component {
                "" | "." => {}
                ".." => return Err(PathError::ParentDir),
                c => {
                    if !normalized.is_empty() {
                        normalized.push('/');
                    }
                    normalized.push_str(c);
                }
            }
        }
        if normalized.is_empty() {
            return Err(PathError::Empty);
        }
        Ok(SafePath(normalized))
    }

    /// The normalized path, e.g. `grub/grub.cfg`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path's components (never empty, never `.` or `..`).
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for SafePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for SafePath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        match SafePath::parse(raw) {
            Ok(p) => p.as_str().to_owned(),
            Err(e) => panic!("{raw:?} refused: {e}"),
        }
    }

    fn err(raw: &str) -> PathError {
        match SafePath::parse(raw) {
            Ok(p) => panic!("{raw:?} accepted as {p}"),
            Err(e) => e,
        }
    }

    #[test]
    fn leading_slash_maps_to_same_file() {
        assert_eq!(ok("/vmlinuz"), "vmlinuz");
        assert_eq!(ok("vmlinuz"), "vmlinuz");
        assert_eq!(ok("//vmlinuz"), "vmlinuz");
        assert_eq!(ok("/grub/grub.cfg"), "grub/grub.cfg");
    }

    #[test]
    fn normalizes_empty_and_dot_components() {
        assert_eq!(ok("a//b"), "a/b");
        assert_eq!(ok("./a/./b/"), "a/b");
        assert_eq!(
            ok("pxelinux.cfg/01-52-54-00-12-34-56"),
            "pxelinux.cfg/01-52-54-00-12-34-56"
        );
        assert_eq!(ok("...hidden/.x"), "...hidden/.x");
    }

    #[test]
    fn refuses_traversal_and_tricks() {
        assert_eq!(err("../etc/passwd"), PathError::ParentDir);
        assert_eq!(err("a/../../b"), PathError::ParentDir);
        assert_eq!(err("a/.."), PathError::ParentDir);
        assert_eq!(err("/.."), PathError::ParentDir);
        assert_eq!(err("%2e%2e/x"), PathError::Percent);
        assert_eq!(err("a%2fb"), PathError::Percent);
        assert_eq!(err("a\\b"), PathError::Backslash);
        assert_eq!(err("..\\windows"), PathError::Backslash);
        assert_eq!(err("a\0b"), PathError::Nul);
        assert_eq!(err("a\nb"), PathError::ControlChar(b'\n'));
        assert_eq!(err("caf\u{e9}"), PathError::NonAscii('\u{e9}'));
        assert_eq!(err("C:/boot.ini"), PathError::DriveLetter);
        assert_eq!(err("/c:x"), PathError::DriveLetter);
        assert_eq!(err(""), PathError::Empty);
        assert_eq!(err("/"), PathError::Empty);
        assert_eq!(err("./"), PathError::Empty);
        let long = "a".repeat(256);
        assert_eq!(err(&long), PathError::TooLong { len: 256, max: 255 });
        assert_eq!(ok(&"a".repeat(255)).len(), 255);
    }

    #[test]
    fn colons_elsewhere_are_allowed() {
        assert_eq!(ok("pxelinux.cfg/a:b"), "pxelinux.cfg/a:b");
    }

    #[test]
    fn components_iterates() {
        let p = SafePath::parse("/a/b/c").expect("valid");
        assert_eq!(p.components().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(p.to_string(), "a/b/c");
    }
}
