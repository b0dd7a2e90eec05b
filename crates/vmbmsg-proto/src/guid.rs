//! The two GUIDs of vmbmsg, and a small `GUID` value type to hold them.

use core::fmt;

/// A Windows `GUID` as four fields (the layout of `GUID` in `guiddef.h` on a little-endian
/// machine). Rendered by [`Display`](fmt::Display) and [`Guid::braced`] in the registry form
/// `{XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX}` (uppercase).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Guid {
    /// First 32 bits.
    pub data1: u32,
    /// Next 16 bits.
    pub data2: u16,
    /// Next 16 bits.
    pub data3: u16,
    /// Last 64 bits, in string order.
    pub data4: [u8; 8],
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Length of the braced string form.
pub const GUID_STRING_LEN: usize = 38;

impl Guid {
    /// The GUID whose string form is the 32 hex digits of `v` (so
    /// `from_u128(0x0123_4567_89AB_CDEF_0123_4567_89AB_CDEF)` is
    /// `{01234567-89AB-CDEF-0123-456789ABCDEF}`).
    #[must_use]
    pub const fn from_u128(v: u128) -> Self {
        let b = v.to_be_bytes();
        Self {
            data1: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            data2: u16::from_be_bytes([b[4], b[5]]),
            data3: u16::from_be_bytes([b[6], b[7]]),
            data4: [b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]],
        }
    }

    /// The 16 bytes in string order (big-endian fields).
    #[must_use]
    pub const fn to_be_bytes(self) -> [u8; 16] {
        let d1 = self.data1.to_be_bytes();
        let d2 = self.data2.to_be_bytes();
        let d3 = self.data3.to_be_bytes();
        let d4 = self.data4;
        [
            d1[0], d1[1], d1[2], d1[3], d2[0], d2[1], d3[0], d3[1], d4[0], d4[1], d4[2], d4[3],
            d4[4], d4[5], d4[6], d4[7],
        ]
    }

    /// The 16 bytes as a `GUID` lies in memory on Windows (`data1..3` little-endian).
    #[must_use]
    pub const fn to_le_bytes(self) -> [u8; 16] {
        let d1 = self.data1.to_le_bytes();
        let d2 = self.data2.to_le_bytes();
        let d3 = self.data3.to_le_bytes();
        let d4 = self.data4;
        [
            d1[0], d1[1], d1[2], d1[3], d2[0], d2[1], d3[0], d3[1], d4[0], d4[1], d4[2], d4[3],
            d4[4], d4[5], d4[6], d4[7],
        ]
    }

    /// The braced uppercase string form as ASCII bytes,
    /// `{XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX}`.
    #[must_use]
    pub const fn braced(self) -> [u8; GUID_STRING_LEN] {
        let bytes = self.to_be_bytes();
        let mut out = [0u8; GUID_STRING_LEN];
        out[0] = b'{';
        out[GUID_STRING_LEN - 1] = b'}';
        let mut pos = 1;
        let mut i = 0;
        while i < 16 {
            if i == 4 || i == 6 || i == 8 || i == 10 {
                out[pos] = b'-';
                pos += 1;
            }
            out[pos] = HEX[(bytes[i] >> 4) as usize];
            out[pos + 1] = HEX[(bytes[i] & 0xF) as usize];
            pos += 2;
            i += 1;
        }
        out
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g, h, i] = self.data4;
        write!(
            f,
            "{{{:08X}-{:04X}-{:04X}-{a:02X}{b:02X}-{c:02X}{d:02X}{e:02X}{g:02X}{h:02X}{i:02X}}}",
            self.data1, self.data2, self.data3
        )
    }
}

/// The device interface class the driver registers and `vmbctl` opens
/// (`{FE1E9ED9-8391-473D-AA69-8198762F76C5}`).
pub const GUID_DEVINTERFACE_VMBMSG: Guid = Guid::from_u128(0xFE1E9ED9_8391_473D_AA69_8198762F76C5);

/// [`GUID_DEVINTERFACE_VMBMSG`] in string form.
pub const GUID_DEVINTERFACE_VMBMSG_STR: &str = "{FE1E9ED9-8391-473D-AA69-8198762F76C5}";

/// The VMBus channel interface type (the host's offer, and the channel the driver binds to)
/// (`{336D9FDF-77D3-4EA8-8086-7B3C7BEECE54}`).
pub const VMBMSG_INTERFACE_TYPE: Guid = Guid::from_u128(0x336D9FDF_77D3_4EA8_8086_7B3C7BEECE54);

/// [`VMBMSG_INTERFACE_TYPE`] in string form.
pub const VMBMSG_INTERFACE_TYPE_STR: &str = "{336D9FDF-77D3-4EA8-8086-7B3C7BEECE54}";

/// The PnP hardware id of the channel device, for the INF: `VMBUS\` + the interface type
/// (PnP compares ids case-insensitively).
pub const VMBMSG_HARDWARE_ID: &str = "VMBUS\\{336D9FDF-77D3-4EA8-8086-7B3C7BEECE54}";

#[cfg(test)]
mod tests {
    extern crate std;
    use std::format;

    use super::*;

    #[test]
    fn display_matches_string_consts() {
        assert_eq!(
            format!("{GUID_DEVINTERFACE_VMBMSG}"),
            GUID_DEVINTERFACE_VMBMSG_STR
        );
        assert_eq!(
            format!("{VMBMSG_INTERFACE_TYPE}"),
            VMBMSG_INTERFACE_TYPE_STR
        );
        assert_eq!(
            &GUID_DEVINTERFACE_VMBMSG.braced(),
            GUID_DEVINTERFACE_VMBMSG_STR.as_bytes()
        );
        assert_eq!(
            &VMBMSG_INTERFACE_TYPE.braced(),
            VMBMSG_INTERFACE_TYPE_STR.as_bytes()
        );
        assert_eq!(
            VMBMSG_HARDWARE_ID,
            format!("VMBUS\\{VMBMSG_INTERFACE_TYPE_STR}")
        );
        assert_ne!(GUID_DEVINTERFACE_VMBMSG, VMBMSG_INTERFACE_TYPE);
    }

    #[test]
    fn fields_and_byte_orders() {
        let g = GUID_DEVINTERFACE_VMBMSG;
        assert_eq!(g.data1, 0xFE1E_9ED9);
        assert_eq!(g.data2, 0x8391);
        assert_eq!(g.data3, 0x473D);
        assert_eq!(g.data4, [0xAA, 0x69, 0x81, 0x98, 0x76, 0x2F, 0x76, 0xC5]);
        assert_eq!(g.to_le_bytes()[..4], [0xD9, 0x9E, 0x1E, 0xFE]);
        assert_eq!(g.to_be_bytes()[..4], [0xFE, 0x1E, 0x9E, 0xD9]);
        // Version-4 (random) GUIDs: version nibble 4, RFC 4122 variant.
        for g in [GUID_DEVINTERFACE_VMBMSG, VMBMSG_INTERFACE_TYPE] {
            assert_eq!(g.data3 >> 12, 4);
            assert_eq!(g.data4[0] & 0xC0, 0x80);
        }
    }

    #[test]
    fn braced_of_a_known_value() {
        let g = Guid::from_u128(0x0123_4567_89AB_CDEF_0123_4567_89AB_CDEF);
        assert_eq!(&g.braced(), b"{01234567-89AB-CDEF-0123-456789ABCDEF}");
        assert_eq!(format!("{g}"), "{01234567-89AB-CDEF-0123-456789ABCDEF}");
    }
}
