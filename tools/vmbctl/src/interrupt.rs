//! Ctrl-C: the first one asks the running command to stop, print what it has so far (its
//! summary, in text and in JSON) and exit with 130, as `ping` and `tail -f` do; a second one
//! ends the process at once.
//!
//! Every wait for the driver goes through [`crate::device::call`], which waits in short slices
//! and cancels its request when [`interrupted`] turns true; the commands' loops check it
//! between steps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The longest a wait runs before it looks at [`interrupted`] again.
pub const SLICE: Duration = Duration::from_millis(50);

/// Installs the Ctrl-C (SIGINT; on Windows, CTRL_C_EVENT and CTRL_BREAK_EVENT) handler. A
/// failure to install it only loses the summary on Ctrl-C, so it is ignored.
pub fn install() {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            // The second Ctrl-C: the user does not want to wait for the cleanup.
            std::process::exit(130);
        }
    });
}

/// Whether Ctrl-C was pressed.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Sleeps for `d`, or less when Ctrl-C is pressed meanwhile. Returns whether it was.
pub fn sleep(d: Duration) -> bool {
    let end = Instant::now() + d;
    loop {
        if interrupted() {
            return true;
        }
        let now = Instant::now();
        if now >= end {
            return false;
        }
        std::thread::sleep((end - now).min(SLICE));
    }
}
