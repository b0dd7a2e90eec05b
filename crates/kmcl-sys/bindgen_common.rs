// Shared by build.rs (Windows: the WDK header) and crates/kmcl-sys-gen (elsewhere: the portable
// header), so that both sides generate the same names with the same options. It is `include!`d,
// so it may only use items from the `bindgen` crate.

/// The client functions that vmbkmcl.lib exports and the 10.0.16299 header declares
/// (reference/vmbus-kmcl-api.md §1, column hdr16299, server-only rows excluded).
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

/// The handle types, callback typedefs and structures of the header.
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
];

/// The constants of reference §3 that the header defines.
pub const KMCL_VARS_REGEX: &str = "VMBUS_(CHANNEL|SERVER_CHANNEL)_.*";

/// Applies the options both sides share to a builder that already has its header.
pub fn kmcl_allowlist(mut builder: bindgen::Builder) -> bindgen::Builder {
    for f in KMCL_FUNCTIONS {
        builder = builder.allowlist_function(f);
    }
    for t in KMCL_TYPES {
        builder = builder.allowlist_type(t);
    }
    builder
        .allowlist_var(KMCL_VARS_REGEX)
        .use_core()
        .derive_default(true)
        .derive_debug(true)
        .generate_comments(false)
        .merge_extern_blocks(true)
        .layout_tests(true)
}
