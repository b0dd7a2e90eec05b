// Shared by build.rs (Windows: the WDK header) and crates/kmcl-sys-gen (elsewhere: the portable
// header), so that both sides generate the same items with the same options. It is `include!`d,
// so it may only use items from the `bindgen` crate and std.

include!("bindgen_names.rs");

/// Gives every structure of [`KMCL_STRUCTS`] the same derives on both sides (see there).
#[derive(Debug)]
pub struct KmclDerives;

impl bindgen::callbacks::ParseCallbacks for KmclDerives {
    fn add_derives(&self, info: &bindgen::callbacks::DeriveInfo<'_>) -> Vec<String> {
        if KMCL_STRUCTS.contains(&info.name) {
            KMCL_STRUCT_DERIVES.iter().map(|d| (*d).to_owned()).collect()
        } else {
            Vec::new()
        }
    }
}

/// Applies the options both sides share to a builder that already has its header: exactly
/// the client API ([`KMCL_FUNCTIONS`], the `FN_`/`PFN_` of [`KMCL_FUNCTION_TYPES`],
/// [`KMCL_TYPES`], [`KMCL_VARS`]) and nothing else of the header (no server-only methods, no
/// later table versions, whose C declarations bindgen cannot lay out).
pub fn kmcl_allowlist(mut builder: bindgen::Builder) -> bindgen::Builder {
    for f in KMCL_FUNCTIONS {
        builder = builder.allowlist_function(f);
    }
    for t in KMCL_FUNCTION_TYPES {
        builder = builder
            .allowlist_type(format!("FN_{t}"))
            .allowlist_type(format!("PFN_{t}"));
    }
    for t in KMCL_TYPES {
        builder = builder.allowlist_type(t);
    }
    for v in KMCL_VARS {
        builder = builder.allowlist_var(v);
    }
    for s in KMCL_STRUCTS {
        // Derived by name (KmclDerives), never by bindgen's own analysis.
        builder = builder.no_copy(*s).no_debug(*s).no_default(*s);
    }
    builder
        .use_core()
        .derive_default(true)
        .derive_debug(true)
        .must_use_type("NTSTATUS")
        .parse_callbacks(Box::new(KmclDerives))
        .generate_comments(false)
        .merge_extern_blocks(true)
        .layout_tests(true)
}

/// The Rust constants of the `DEFINE_GUID` lines of [`KMCL_GUIDS`] in `header` (the text of the
/// header bindgen reads), as `GUID` struct literals; bindgen itself would only declare an
/// extern static, which nothing defines unless the driver compiles a C file with `INITGUID`.
///
/// # Errors
/// A GUID of [`KMCL_GUIDS`] that the header does not define, or defines in a form this parser
/// does not read.
pub fn guid_constants(header: &str) -> Result<String, String> {
    let mut out = String::new();
    for name in KMCL_GUIDS {
        let needle = format!("DEFINE_GUID({name},");
        let start = header
            .find(&needle)
            .ok_or_else(|| format!("the header has no DEFINE_GUID({name}, ...)"))?;
        let rest = &header[start + needle.len()..];
        let end = rest
            .find(')')
            .ok_or_else(|| format!("DEFINE_GUID({name}, ...) is not closed"))?;
        let fields: Vec<u64> = rest[..end]
            .split(',')
            .map(|f| {
                let f = f.trim();
                let hex = f.strip_prefix("0x").or_else(|| f.strip_prefix("0X"));
                hex.map_or_else(|| f.parse(), |h| u64::from_str_radix(h, 16))
                    .map_err(|e| format!("DEFINE_GUID({name}, ...): {f:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        let [d1, d2, d3, b @ ..] = fields.as_slice() else {
            return Err(format!("DEFINE_GUID({name}, ...) has {} fields", fields.len()));
        };
        if b.len() != 8 || *d1 > 0xFFFF_FFFF || *d2 > 0xFFFF || *d3 > 0xFFFF || b.iter().any(|x| *x > 0xFF) {
            return Err(format!("DEFINE_GUID({name}, ...) has out-of-range fields"));
        }
        let bytes: Vec<String> = b.iter().map(|x| format!("{x:#04x}")).collect();
        out.push_str(&format!(
            "/// `{name}` (`DEFINE_GUID` in the header).\npub const {name}: GUID = GUID {{ Data1: {d1:#010x}, Data2: {d2:#06x}, Data3: {d3:#06x}, Data4: [{}] }};\n",
            bytes.join(", ")
        ));
    }
    Ok(out)
}
