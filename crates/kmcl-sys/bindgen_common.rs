// Shared by build.rs (Windows: the WDK header) and crates/kmcl-sys-gen (elsewhere: the portable
// header), so that both sides generate the same items with the same options. It is `include!`d,
// so it may only use items from the `bindgen` crate and std, and it is one file on purpose
// (a build script's inputs). kmcl-sys's tests read the name lists below as text
// (`src/lib.rs`, `drift_tests::list`).

/// The client functions that `vmbkmcl.lib` exports and the WDK header declares as plain
/// functions (reference/vmbus-kmcl-api.md §1, server-only rows excluded), in
/// `KMCL_CLIENT_INTERFACE_V1` order. `VmbChannelGetMmioSpace`, the table's 41st client member,
/// is reached only through the table and is not linked.
pub const KMCL_FUNCTIONS: &[&str] = &[
    "VmbChannelAllocate",
    "VmbChannelCleanup",
    "VmbChannelCreateGpadlFromBuffer",
    "VmbChannelCreateGpadlFromMdl",
    "VmbChannelDeleteGpadl",
    "VmbChannelDisable",
    "VmbChannelEnable",
    "VmbChannelGetInterfaceInstance",
    "VmbChannelGetPointer",
    "VmbChannelInitSetClientContextSize",
    "VmbChannelInitSetFlags",
    "VmbChannelInitSetFriendlyName",
    "VmbChannelInitSetMaximumExternalData",
    "VmbChannelInitSetMaximumPacketSize",
    "VmbChannelInitSetProcessPacketCallbacks",
    "VmbChannelInitSetStateChangeCallbacks",
    "VmbChannelPacketComplete",
    "VmbChannelPacketDeferToPassive",
    "VmbChannelPacketFail",
    "VmbChannelPacketGetExternalData",
    "VmbChannelPause",
    "VmbChannelSendSynchronousRequest",
    "VmbChannelSetIncomingProcessingAtPassive",
    "VmbChannelSetInterruptLatency",
    "VmbChannelSetPointer",
    "VmbChannelSetTransactionQuota",
    "VmbChannelSizeofPacket",
    "VmbChannelStart",
    "VmbClientChannelInitSetRingBufferPageCount",
    "VmbClientChannelInitSetTargetPnp",
    "VmbPacketAllocate",
    "VmbPacketFree",
    "VmbPacketGetChannel",
    "VmbPacketGetPointer",
    "VmbPacketInitialize",
    "VmbPacketSend",
    "VmbPacketSendWithExternalMdl",
    "VmbPacketSendWithExternalPfns",
    "VmbPacketSetCompletionRoutine",
    "VmbPacketSetPointer",
];

/// The function types of the 41 client members of `KMCL_CLIENT_INTERFACE_V1`, in table order,
/// without their `FN_` / `PFN_` prefix (both are generated).
pub const KMCL_FUNCTION_TYPES: &[&str] = &[
    "VMB_CHANNEL_ALLOCATE",
    "VMB_CHANNEL_CLEANUP",
    "VMB_CHANNEL_CREATE_GPADL_FROM_BUFFER",
    "VMB_CHANNEL_CREATE_GPADL_FROM_MDL",
    "VMB_CHANNEL_DELETE_GPADL",
    "VMB_CHANNEL_DISABLE",
    "VMB_CHANNEL_ENABLE",
    "VMB_CHANNEL_GET_INTERFACE_INSTANCE",
    "VMB_CHANNEL_GET_MMIO_SPACE",
    "VMB_CHANNEL_GET_POINTER",
    "VMB_CHANNEL_INIT_SET_CLIENT_CONTEXT_SIZE",
    "VMB_CHANNEL_INIT_SET_FLAGS",
    "VMB_CHANNEL_INIT_SET_FRIENDLY_NAME",
    "VMB_CHANNEL_INIT_SET_MAXIMUM_EXTERNAL_DATA",
    "VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_SIZE",
    "VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS",
    "VMB_CHANNEL_INIT_SET_STATE_CHANGE_CALLBACKS",
    "VMB_CHANNEL_PACKET_COMPLETE",
    "VMB_CHANNEL_PACKET_DEFER_TO_PASSIVE",
    "VMB_CHANNEL_PACKET_FAIL",
    "VMB_CHANNEL_PACKET_GET_EXTERNAL_DATA",
    "VMB_CHANNEL_PAUSE",
    "VMB_CHANNEL_SEND_SYNCHRONOUS_REQUEST",
    "VMB_CHANNEL_SET_INCOMING_PROCESSING_AT_PASSIVE",
    "VMB_CHANNEL_SET_INTERRUPT_LATENCY",
    "VMB_CHANNEL_SET_POINTER",
    "VMB_CHANNEL_SET_TRANSACTION_QUOTA",
    "VMB_CHANNEL_SIZEOF_PACKET",
    "VMB_CHANNEL_START",
    "VMB_CLIENT_CHANNEL_INIT_SET_RING_BUFFER_PAGE_COUNT",
    "VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PNP",
    "VMB_PACKET_ALLOCATE",
    "VMB_PACKET_FREE",
    "VMB_PACKET_GET_CHANNEL",
    "VMB_PACKET_GET_POINTER",
    "VMB_PACKET_INITIALIZE",
    "VMB_PACKET_SEND",
    "VMB_PACKET_SEND_WITH_EXTERNAL_MDL",
    "VMB_PACKET_SEND_WITH_EXTERNAL_PFNS",
    "VMB_PACKET_SET_COMPLETION_ROUTINE",
    "VMB_PACKET_SET_POINTER",
];

/// The handle types, callback typedefs and structures of the client API.
pub const KMCL_TYPES: &[&str] = &[
    "VMBCHANNEL",
    "VMBCHANNEL__",
    "VMBPACKET",
    "VMBPACKET__",
    "VMBPACKETCOMPLETION",
    "VMBPACKETCOMPLETION__",
    "EVT_VMB_CHANNEL_OPENED",
    "PFN_VMB_CHANNEL_OPENED",
    "EVT_VMB_CHANNEL_CLOSED",
    "PFN_VMB_CHANNEL_CLOSED",
    "EVT_VMB_CHANNEL_SUSPEND",
    "PFN_VMB_CHANNEL_SUSPEND",
    "EVT_VMB_CHANNEL_STARTED",
    "PFN_VMB_CHANNEL_STARTED",
    "EVT_VMB_CHANNEL_POST_STARTED",
    "PFN_VMB_CHANNEL_POST_STARTED",
    "EVT_VMB_CHANNEL_PROCESS_PACKET",
    "PFN_VMB_CHANNEL_PROCESS_PACKET",
    "EVT_VMB_CHANNEL_PROCESSING_COMPLETE",
    "PFN_VMB_CHANNEL_PROCESSING_COMPLETE",
    "EVT_VMB_CHANNEL_PNP_FAILURE",
    "PFN_VMB_CHANNEL_PNP_FAILURE",
    "EVT_VMB_PACKET_COMPLETION_ROUTINE",
    "PFN_VMB_PACKET_COMPLETION_ROUTINE",
    "_VMB_CHANNEL_STATE_CHANGE_CALLBACKS",
    "VMB_CHANNEL_STATE_CHANGE_CALLBACKS",
    "PVMB_CHANNEL_STATE_CHANGE_CALLBACKS",
    "_KMCL_CLIENT_INTERFACE_V1",
    "KMCL_CLIENT_INTERFACE_V1",
    "PKMCL_CLIENT_INTERFACE_V1",
];

/// The structures whose derives are set by name rather than by bindgen's analysis: on Windows
/// their field types come from wdk-sys (not allowlisted, `allowlist_recursively(false)`), so
/// bindgen cannot prove them `Copy` and would derive nothing, while the portable run can. Both
/// sides get exactly [`KMCL_STRUCT_DERIVES`].
pub const KMCL_STRUCTS: &[&str] = &[
    "VMBCHANNEL__",
    "VMBPACKET__",
    "VMBPACKETCOMPLETION__",
    "_VMB_CHANNEL_STATE_CHANGE_CALLBACKS",
    "_KMCL_CLIENT_INTERFACE_V1",
];

/// The derives of every structure in [`KMCL_STRUCTS`].
pub const KMCL_STRUCT_DERIVES: &[&str] = &["Debug", "Default", "Copy", "Clone"];

/// The constants of the client API (reference §3 and the table's versions), by exact name.
/// `KMCL_CLIENT_INTERFACE_VERSION_LATEST` is left out on purpose: it is 2 in 10.0.17763 and 5
/// in 10.0.22621, so code must name the version it means.
pub const KMCL_VARS: &[&str] = &[
    "VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION",
    "VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH",
    "VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER",
    "VMBUS_CHANNEL_FORMAT_FLAG_DATA_IN_ONLY",
    "VMBUS_CHANNEL_FORMAT_FLAG_DATA_OUT_ONLY",
    "VMBUS_CHANNEL_FORMAT_FLAGS",
    "VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY",
    "VMBUS_CHANNEL_GPADL_FLAGS",
    "VMBUS_CHANNEL_INIT_FLAG_IS_PIPE",
    "VMBUS_CHANNEL_INIT_FLAGS",
    "VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA",
    "VMBUS_CHANNEL_PROCESS_PACKET_FLAGS",
    "VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY",
    "VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAGS",
    "KMCL_CLIENT_INTERFACE_VERSION_V1",
    "KMCL_CLIENT_INTERFACE_VERSION_V2",
];

/// The base types the declarations use. On Windows `lib.rs` re-exports these from wdk-sys;
/// the portable run generates them from the portable header (a test checks that `lib.rs`
/// re-exports each one).
pub const KMCL_BASE_TYPES: &[&str] = &[
    "BOOLEAN",
    "DEVICE_OBJECT",
    "GUID",
    "HANDLE",
    "INTERFACE",
    "LARGE_INTEGER",
    "LPCGUID",
    "LPGUID",
    "MDL",
    "NTSTATUS",
    "PCUNICODE_STRING",
    "PDEVICE_OBJECT",
    "PFN_NUMBER",
    "PINTERFACE",
    "PINTERFACE_DEREFERENCE",
    "PINTERFACE_REFERENCE",
    "PLARGE_INTEGER",
    "PMDL",
    "PPFN_NUMBER",
    "PUINT16",
    "PUINT32",
    "PVOID",
    "UINT16",
    "UINT32",
    "UINT64",
    "ULONG",
    "ULONG_PTR",
    "ULONG64",
    "UNICODE_STRING",
    "USHORT",
];

/// The GUID constants read from the header's `DEFINE_GUID` lines (bindgen would only declare
/// an extern static for them).
pub const KMCL_GUIDS: &[&str] = &["KMCL_CLIENT_INTERFACE_TYPE"];

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
