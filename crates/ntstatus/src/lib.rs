//! `NTSTATUS` as a typed value.
//!
//! One definition shared by the KMCL wrapper, the driver core, the wire protocol and the
//! user-mode tool, so that a status is never a bare `i32` anywhere above the FFI. The values
//! are those of the WDK's `ntstatus.h`.
//!
//! ```
//! use ntstatus::NtStatus;
//!
//! let s = NtStatus::STATUS_DEVICE_NOT_READY;
//! assert!(!s.is_success());
//! assert_eq!(s.to_string(), "STATUS_DEVICE_NOT_READY (0xC00000A3)");
//! // What the kernel hands over as an `i32`, and a code no name covers:
//! assert_eq!(NtStatus(-1_073_741_536), NtStatus::STATUS_CANCELLED);
//! assert_eq!(NtStatus(0x1234).name(), None);
//! ```
#![no_std]
#![forbid(unsafe_code)]

use core::fmt;

/// A Windows `NTSTATUS`: `0..=0x7FFF_FFFF` is success (with `0x4…` informational), `0x8…`
/// warnings and `0xC…` errors; [`NtStatus::is_success`] is the kernel's `NT_SUCCESS`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
#[must_use = "an NTSTATUS says whether something failed"]
pub struct NtStatus(pub i32);

/// Reinterprets a hexadecimal `u32` (as `ntstatus.h` writes codes) as the stored `i32`.
const fn from_hex(v: u32) -> NtStatus {
    NtStatus(i32::from_ne_bytes(v.to_ne_bytes()))
}

macro_rules! define {
    ($($(#[$doc:meta])* $name:ident = $value:literal,)*) => {
        impl NtStatus {
            $($(#[$doc])* pub const $name: Self = from_hex($value);)*

            /// Every status this crate names, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$name,)*];

            /// The symbolic name of a status this crate knows, such as `"STATUS_CANCELLED"`.
            #[must_use]
            pub const fn name(self) -> Option<&'static str> {
                $(if self.0 == Self::$name.0 { return Some(stringify!($name)); })*
                None
            }
        }
    };
}

define! {
    /// The operation completed successfully.
    STATUS_SUCCESS = 0x0000_0000,
    /// The operation is in progress and completes later.
    STATUS_PENDING = 0x0000_0103,
    /// The data was too large to fit (a warning: part of it may have been returned).
    STATUS_BUFFER_OVERFLOW = 0x8000_0005,
    /// The request is not valid for this device or object.
    STATUS_INVALID_DEVICE_REQUEST = 0xC000_0010,
    /// An invalid parameter was passed.
    STATUS_INVALID_PARAMETER = 0xC000_000D,
    /// The object or handle is not valid.
    STATUS_INVALID_HANDLE = 0xC000_0008,
    /// Unsuccessful, with no more specific status.
    STATUS_UNSUCCESSFUL = 0xC000_0001,
    /// The operation is not implemented.
    STATUS_NOT_IMPLEMENTED = 0xC000_0002,
    /// More processing is required to complete the operation.
    STATUS_MORE_PROCESSING_REQUIRED = 0xC000_0016,
    /// The caller's buffer is too small for the data.
    STATUS_BUFFER_TOO_SMALL = 0xC000_0023,
    /// The data is not in the expected form.
    STATUS_INVALID_BUFFER_SIZE = 0xC000_0206,
    /// The caller may not do this.
    STATUS_ACCESS_DENIED = 0xC000_0022,
    /// Not enough memory or other resources.
    STATUS_INSUFFICIENT_RESOURCES = 0xC000_009A,
    /// The request is not supported.
    STATUS_NOT_SUPPORTED = 0xC000_00BB,
    /// The first parameter is invalid.
    STATUS_INVALID_PARAMETER_1 = 0xC000_00EF,
    /// The second parameter is invalid.
    STATUS_INVALID_PARAMETER_2 = 0xC000_00F0,
    /// The third parameter is invalid.
    STATUS_INVALID_PARAMETER_3 = 0xC000_00F1,
    /// The I/O request was cancelled.
    STATUS_CANCELLED = 0xC000_0120,
    /// The device is not ready for the request.
    STATUS_DEVICE_NOT_READY = 0xC000_00A3,
    /// The device has been removed.
    STATUS_DEVICE_REMOVED = 0xC000_02B6,
    /// The device is busy.
    STATUS_DEVICE_BUSY = 0x8000_0011,
    /// The wait timed out.
    STATUS_IO_TIMEOUT = 0xC000_00B5,
    /// The object is in a state that does not allow the request.
    STATUS_INVALID_DEVICE_STATE = 0xC000_0184,
    /// The peer's protocol revision does not match ours.
    STATUS_REVISION_MISMATCH = 0xC000_0059,
    /// Data on the wire is malformed or inconsistent.
    STATUS_DATA_ERROR = 0xC000_003E,
    /// The peer's data is not what the protocol allows.
    STATUS_INVALID_NETWORK_RESPONSE = 0xC000_00C3,
    /// A limit was reached and the item was not queued.
    STATUS_QUOTA_EXCEEDED = 0xC000_0044,
    /// The size of a buffer is not what the operation needs.
    STATUS_INFO_LENGTH_MISMATCH = 0xC000_0004,
    /// The message was truncated or is incomplete.
    STATUS_INVALID_USER_BUFFER = 0xC000_00E8,
    /// An unexpected internal failure.
    STATUS_INTERNAL_ERROR = 0xC000_00E5,
    /// The device does not exist (ntstatus.h).
    STATUS_NO_SUCH_DEVICE = 0xC000_000E,
}

impl NtStatus {
    /// The kernel's `NT_SUCCESS`: true for success and informational codes.
    #[must_use]
    pub const fn is_success(self) -> bool {
        self.0 >= 0
    }

    /// True for error codes (severity 3, `0xC…`).
    #[must_use]
    pub const fn is_error(self) -> bool {
        (self.0 as u32) >> 30 == 3
    }

    /// The code as `ntstatus.h` writes it, e.g. `0xC0000120`.
    #[must_use]
    pub const fn as_u32(self) -> u32 {
        u32::from_ne_bytes(self.0.to_ne_bytes())
    }

    /// `Ok(())` for a success status and `Err(self)` otherwise, for `?` in kernel-style code.
    ///
    /// # Errors
    /// Returns `self` when it is not a success status.
    pub const fn ok(self) -> Result<(), Self> {
        if self.is_success() { Ok(()) } else { Err(self) }
    }
}

impl From<i32> for NtStatus {
    fn from(v: i32) -> Self {
        Self(v)
    }
}

impl From<NtStatus> for i32 {
    fn from(v: NtStatus) -> Self {
        v.0
    }
}

impl fmt::Debug for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for NtStatus {
    /// `STATUS_CANCELLED (0xC0000120)`, or just the hex code for a status without a name here.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({:#010X})", self.as_u32()),
            None => write!(f, "NTSTATUS {:#010X}", self.as_u32()),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::NtStatus;
    use std::{collections::HashSet, format};

    #[test]
    fn values_match_ntstatus_h() {
        assert_eq!(NtStatus::STATUS_SUCCESS.0, 0);
        assert_eq!(NtStatus::STATUS_CANCELLED.as_u32(), 0xC000_0120);
        assert_eq!(NtStatus::STATUS_BUFFER_TOO_SMALL.as_u32(), 0xC000_0023);
        assert_eq!(NtStatus::STATUS_DEVICE_REMOVED.as_u32(), 0xC000_02B6);
        assert_eq!(NtStatus::STATUS_INVALID_PARAMETER_2.as_u32(), 0xC000_00F0);
    }

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut seen = HashSet::new();
        for s in NtStatus::ALL {
            assert!(seen.insert(s.0), "duplicate value {s}");
            assert!(s.name().is_some_and(|n| n.starts_with("STATUS_")));
        }
        assert_eq!(NtStatus(0x1234_5678).name(), None);
    }

    #[test]
    fn severity_and_display() {
        assert!(NtStatus::STATUS_PENDING.is_success());
        assert!(!NtStatus::STATUS_BUFFER_OVERFLOW.is_success());
        assert!(!NtStatus::STATUS_BUFFER_OVERFLOW.is_error());
        assert!(NtStatus::STATUS_CANCELLED.is_error());
        assert_eq!(
            format!("{}", NtStatus::STATUS_CANCELLED),
            "STATUS_CANCELLED (0xC0000120)"
        );
        assert_eq!(format!("{}", NtStatus(-1)), "NTSTATUS 0xFFFFFFFF");
        assert_eq!(
            NtStatus::STATUS_CANCELLED.ok(),
            Err(NtStatus::STATUS_CANCELLED)
        );
    }
}
