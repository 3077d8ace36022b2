//! Writing to stdout without panicking when the reader goes away
//! (`rackboot node list | head`).

use std::io::Write;

/// Write one line to stdout. A closed pipe ends the program quietly, as
/// command-line tools are expected to.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// `println!` that survives a closed pipe.
macro_rules! say {
    ($($t:tt)*) => { $crate::output::line(format_args!($($t)*)) };
}
