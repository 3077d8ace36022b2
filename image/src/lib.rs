//! What rackboot reads from an image's parts, from their bytes alone (no
//! files, no sockets): the kernel release named in a bzImage's setup header,
//! and the kernel release, module count and module tables of a kernel-module
//! bundle. The coordinator refuses an image whose two releases differ; the
//! agent serves each node the tables of the kernel it was actually served.
//!
//! ## Invariants
//! - Never panics on input: every offset and length read from an image is
//!   checked (fuzz target `image_inspect`).
//! - Reads bytes it is given, nothing else.
//!
//! ## Must never depend on
//! tokio, the file system, sockets, or the coordinator or agent crates.

pub mod bundle;
pub mod kernel;
pub mod outboard;

pub use bundle::{BundleError, ModuleBundle};
pub use kernel::{KernelError, kernel_release};
pub use outboard::{Outboard, OutboardBuilder, OutboardError};

/// Check that a module bundle belongs to a kernel; the error names both.
pub fn check_modules_match(kernel: &str, bundle: &str) -> Result<(), String> {
    if kernel == bundle {
        Ok(())
    } else {
        Err(format!(
            "module bundle is for kernel {bundle} (lib/modules/{bundle}/) but the kernel image header says {kernel}"
        ))
    }
}
