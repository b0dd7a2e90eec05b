//! `open_enum!`: a `repr(transparent)` newtype over a little-endian integer with named
//! associated consts, as openvmm's `open_enum` does. Any bit pattern is a valid value, so a
//! value read off the wire or out of an IOCTL buffer always parses; an unknown one is reported
//! by [`name`](crate::wire::MessageKind::name) returning `None`, never undefined behaviour.

/// Defines an open enum `$name($repr)` where `$repr` is one of zerocopy's
/// `little_endian::{U16, U32}` and `$native` the matching native integer.
macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        pub struct $name:ident($fvis:vis $repr:ident => $native:ty) {
            $(
                $(#[$vmeta:meta])*
                $variant:ident = $value:literal,
            )*
        }
    ) => {
        $(#[$meta])*
        #[repr(transparent)]
        #[derive(
            Clone,
            Copy,
            PartialEq,
            Eq,
            Hash,
            zerocopy::IntoBytes,
            zerocopy::FromBytes,
            zerocopy::Immutable,
            zerocopy::KnownLayout,
            zerocopy::Unaligned,
        )]
        pub struct $name($fvis $repr);

        impl $name {
            $(
                $(#[$vmeta])*
                pub const $variant: Self = Self($repr::new($value));
            )*

            /// Every named value, in declaration order.
            pub const KNOWN: &'static [Self] = &[$(Self::$variant,)*];

            /// Wraps a raw value (known or not).
            #[must_use]
            pub const fn new(raw: $native) -> Self {
                Self($repr::new(raw))
            }

            /// The raw value in native byte order.
            #[must_use]
            pub const fn get(self) -> $native {
                self.0.get()
            }

            /// The name of a known value (`"ECHO"`), or `None` for a value this crate does
            /// not define.
            #[must_use]
            pub const fn name(self) -> Option<&'static str> {
                let raw = self.get();
                $(if raw == $value { return Some(stringify!($variant)); })*
                None
            }

            /// True when the value is one of the named consts.
            #[must_use]
            pub const fn is_known(self) -> bool {
                self.name().is_some()
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self.name() {
                    Some(name) => f.write_str(name),
                    None => write!(f, "{}({:#x})", stringify!($name), self.get()),
                }
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                core::fmt::Debug::fmt(self, f)
            }
        }
    };
}

pub(crate) use open_enum;
