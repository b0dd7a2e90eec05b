/*
 * vmbkmcl_portable.h - a portable declaration of the client half of the VMBus Kernel Mode
 * Client Library (vmbuskernelmodeclientlibapi.h, WDK 10.0.16299 and later).
 *
 * Written for vmbmsg from shared/reference/vmbus-kmcl-api.md, not copied from the WDK.
 * It exists so that the Rust bindings can be generated on machines that have no WDK: the
 * names, argument order and types are those of the WDK header, and the base types below are
 * spelled with fixed-width integers so that their sizes are the ones Windows uses (LLP64:
 * ULONG is 32 bits) whatever the host's C data model is.
 *
 * Declarations only. On Windows the bindings come from the WDK header itself; see build.rs.
 * Server-only functions (KMCL_SERVER_ONLY_METHODS) and interface-only functions
 * (VmbChannelGetMmioSpace) are not declared: a guest driver links neither.
 */
#ifndef VMBKMCL_PORTABLE_H
#define VMBKMCL_PORTABLE_H

#include <stdint.h>

/* ---- Windows base types, as wdk-sys names them ---------------------------------------- */

typedef void VOID;
typedef void *PVOID;
typedef int32_t LONG;
typedef int64_t LONGLONG;
typedef uint8_t UCHAR;
typedef uint16_t USHORT;
typedef uint32_t ULONG;
typedef uint8_t BOOLEAN;
typedef uint8_t UINT8;
typedef uint16_t UINT16;
typedef uint32_t UINT32;
typedef uint16_t *PUINT16;
typedef uint32_t *PUINT32;
typedef uint16_t WCHAR;
typedef WCHAR *PWCH;
typedef uintptr_t ULONG_PTR;
typedef ULONG_PTR PFN_NUMBER;
typedef PFN_NUMBER *PPFN_NUMBER;
typedef void *HANDLE;
typedef HANDLE *PHANDLE;
typedef LONG NTSTATUS;

typedef struct _GUID {
    ULONG Data1;
    USHORT Data2;
    USHORT Data3;
    UCHAR Data4[8];
} GUID;
typedef GUID *LPGUID;
typedef const GUID *LPCGUID;

typedef struct _UNICODE_STRING {
    USHORT Length;
    USHORT MaximumLength;
    PWCH Buffer;
} UNICODE_STRING;
typedef UNICODE_STRING *PUNICODE_STRING;
typedef const UNICODE_STRING *PCUNICODE_STRING;

typedef union _LARGE_INTEGER {
    struct {
        ULONG LowPart;
        LONG HighPart;
    } u;
    LONGLONG QuadPart;
} LARGE_INTEGER;
typedef LARGE_INTEGER *PLARGE_INTEGER;

/* Opaque here: the client library only passes these through. */
typedef struct _MDL MDL;
typedef MDL *PMDL;
typedef struct _DEVICE_OBJECT DEVICE_OBJECT;
typedef DEVICE_OBJECT *PDEVICE_OBJECT;

/* DECLARE_HANDLE(name) with STRICT, as the WDK defines it. */
#define VMBKMCL_DECLARE_HANDLE(name) struct name##__ { int unused; }; typedef struct name##__ *name

/* ---- Handles ----------------------------------------------------------------------------- */

VMBKMCL_DECLARE_HANDLE(VMBCHANNEL);
VMBKMCL_DECLARE_HANDLE(VMBPACKET);
VMBKMCL_DECLARE_HANDLE(VMBPACKETCOMPLETION);

/* ---- Constants (reference section 3) ---------------------------------------------------- */

#define VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION 0x1
#define VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH 0x2
#define VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER 0x4
#define VMBUS_CHANNEL_FORMAT_FLAGS \
    (VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION | VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH | \
     VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER)

#define VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY 0x1
#define VMBUS_CHANNEL_GPADL_FLAGS (VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY)

#define VMBUS_CHANNEL_INIT_FLAG_IS_PIPE 0x1
#define VMBUS_CHANNEL_INIT_FLAGS (VMBUS_CHANNEL_INIT_FLAG_IS_PIPE)

#define VMBUS_SERVER_CHANNEL_INIT_FLAG_LOOPBACK_OFFER 0x1
#define VMBUS_SERVER_CHANNEL_INIT_FLAG_ENUMERATE_DEVICE_INTERFACE 0x2
#define VMBUS_SERVER_CHANNEL_INIT_FLAG_OFFER_AS_PIPE 0x4
#define VMBUS_SERVER_CHANNEL_INIT_FLAG_FORCE_NEW_CHANNEL 0x8
#define VMBUS_SERVER_CHANNEL_INIT_FLAG_TLNPI_PROVIDER_OFFER 0x10
#define VMBUS_SERVER_CHANNEL_INIT_FLAGS \
    (VMBUS_SERVER_CHANNEL_INIT_FLAG_LOOPBACK_OFFER | \
     VMBUS_SERVER_CHANNEL_INIT_FLAG_ENUMERATE_DEVICE_INTERFACE | \
     VMBUS_SERVER_CHANNEL_INIT_FLAG_OFFER_AS_PIPE | VMBUS_SERVER_CHANNEL_INIT_FLAG_FORCE_NEW_CHANNEL | \
     VMBUS_SERVER_CHANNEL_INIT_FLAG_TLNPI_PROVIDER_OFFER)

#define VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA 0x1
#define VMBUS_CHANNEL_PROCESS_PACKET_FLAGS (VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA)

#define VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY 0x1
#define VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAGS (VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY)

#define VMBUS_SERVER_CHANNEL_INIT_MAXIMUM_OFFER_DATA 120

/* ---- Callbacks (reference section 8) ---------------------------------------------------- */

typedef NTSTATUS EVT_VMB_CHANNEL_OPENED(VMBCHANNEL Channel);
typedef EVT_VMB_CHANNEL_OPENED *PFN_VMB_CHANNEL_OPENED;

typedef VOID EVT_VMB_CHANNEL_CLOSED(VMBCHANNEL Channel);
typedef EVT_VMB_CHANNEL_CLOSED *PFN_VMB_CHANNEL_CLOSED;

typedef VOID EVT_VMB_CHANNEL_SUSPEND(VMBCHANNEL Channel);
typedef EVT_VMB_CHANNEL_SUSPEND *PFN_VMB_CHANNEL_SUSPEND;

typedef VOID EVT_VMB_CHANNEL_STARTED(VMBCHANNEL Channel);
typedef EVT_VMB_CHANNEL_STARTED *PFN_VMB_CHANNEL_STARTED;

typedef VOID EVT_VMB_CHANNEL_POST_STARTED(VMBCHANNEL Channel);
typedef EVT_VMB_CHANNEL_POST_STARTED *PFN_VMB_CHANNEL_POST_STARTED;

typedef VOID EVT_VMB_CHANNEL_PROCESS_PACKET(
    VMBCHANNEL Channel,
    VMBPACKETCOMPLETION Packet,
    PVOID Buffer,
    UINT32 BufferLength,
    UINT32 Flags);
typedef EVT_VMB_CHANNEL_PROCESS_PACKET *PFN_VMB_CHANNEL_PROCESS_PACKET;

typedef VOID EVT_VMB_CHANNEL_PROCESSING_COMPLETE(VMBCHANNEL Channel, UINT32 PacketsProcessed);
typedef EVT_VMB_CHANNEL_PROCESSING_COMPLETE *PFN_VMB_CHANNEL_PROCESSING_COMPLETE;

typedef VOID EVT_VMB_CHANNEL_PNP_FAILURE(VMBCHANNEL Channel, NTSTATUS FailureStatus);
typedef EVT_VMB_CHANNEL_PNP_FAILURE *PFN_VMB_CHANNEL_PNP_FAILURE;

typedef VOID EVT_VMB_PACKET_COMPLETION_ROUTINE(
    VMBPACKET Packet,
    NTSTATUS Status,
    PVOID Buffer,
    UINT32 BufferLength);
typedef EVT_VMB_PACKET_COMPLETION_ROUTINE *PFN_VMB_PACKET_COMPLETION_ROUTINE;

/* ---- Structures (reference section 4) --------------------------------------------------- */

typedef struct _VMB_CHANNEL_STATE_CHANGE_CALLBACKS {
    ULONG Version;
    ULONG Size;
    PFN_VMB_CHANNEL_OPENED EvtChannelOpened;
    PFN_VMB_CHANNEL_CLOSED EvtChannelClosed;
    PFN_VMB_CHANNEL_SUSPEND EvtChannelSuspend;
    PFN_VMB_CHANNEL_STARTED EvtChannelStarted;
    PFN_VMB_CHANNEL_POST_STARTED EvtChannelPostStarted;
} VMB_CHANNEL_STATE_CHANGE_CALLBACKS, *PVMB_CHANNEL_STATE_CHANGE_CALLBACKS;

/* ---- Channel lifetime (reference section 7.1) ------------------------------------------- */

NTSTATUS VmbChannelAllocate(PDEVICE_OBJECT ParentDeviceObject, BOOLEAN IsServer, VMBCHANNEL *Channel);
VOID VmbChannelCleanup(VMBCHANNEL Channel);
NTSTATUS VmbChannelEnable(VMBCHANNEL Channel);
VOID VmbChannelDisable(VMBCHANNEL Channel);
VOID VmbChannelPause(VMBCHANNEL Channel);
VOID VmbChannelStart(VMBCHANNEL Channel);

/* ---- Init-time configuration (7.2) ------------------------------------------------------- */

NTSTATUS VmbChannelInitSetMaximumPacketSize(VMBCHANNEL Channel, UINT32 PacketSize);
NTSTATUS VmbChannelInitSetMaximumExternalData(VMBCHANNEL Channel, UINT32 DataSize, UINT32 ChainLength);
NTSTATUS VmbChannelInitSetClientContextSize(VMBCHANNEL Channel, UINT32 ContextSize);
NTSTATUS VmbChannelInitSetProcessPacketCallbacks(
    VMBCHANNEL Channel,
    PFN_VMB_CHANNEL_PROCESS_PACKET ProcessPacketCallback,
    PFN_VMB_CHANNEL_PROCESSING_COMPLETE ProcessingCompleteCallback);
NTSTATUS VmbChannelInitSetStateChangeCallbacks(
    VMBCHANNEL Channel,
    PVMB_CHANNEL_STATE_CHANGE_CALLBACKS StateChangeCallbacks);
NTSTATUS VmbChannelInitSetFriendlyName(VMBCHANNEL Channel, PCUNICODE_STRING Name);
NTSTATUS VmbChannelInitSetFlags(VMBCHANNEL Channel, UINT32 Flags);
NTSTATUS VmbClientChannelInitSetRingBufferPageCount(
    VMBCHANNEL Channel,
    UINT32 IncomingPageCount,
    UINT32 OutgoingPageCount);
NTSTATUS VmbClientChannelInitSetTargetPnp(
    VMBCHANNEL Channel,
    LPCGUID InterfaceType,
    LPCGUID InterfaceInstance,
    PFN_VMB_CHANNEL_PNP_FAILURE PnpFailureCallback);

/* ---- Runtime configuration and queries (7.3) --------------------------------------------- */

VOID VmbChannelSetIncomingProcessingAtPassive(VMBCHANNEL Channel, BOOLEAN RequirePassive);
VOID VmbChannelSetTransactionQuota(VMBCHANNEL Channel, UINT32 Quota);
NTSTATUS VmbChannelSetInterruptLatency(VMBCHANNEL Channel, UINT16 Latency, PUINT16 OriginalLatency);
VOID VmbChannelGetInterfaceInstance(VMBCHANNEL Channel, LPGUID InterfaceInstance);
VOID VmbChannelSetPointer(VMBCHANNEL Channel, PVOID Pointer);
PVOID VmbChannelGetPointer(VMBCHANNEL Channel);

/* ---- Incoming packets (7.4) ----------------------------------------------------------------- */

VOID VmbChannelPacketComplete(
    VMBPACKETCOMPLETION PacketCompletionContext,
    PVOID PacketCompletionBuffer,
    UINT32 BufSize);
VOID VmbChannelPacketFail(VMBPACKETCOMPLETION PacketCompletionContext);
VOID VmbChannelPacketDeferToPassive(VMBPACKETCOMPLETION PacketCompletionContext);
NTSTATUS VmbChannelPacketGetExternalData(
    VMBPACKETCOMPLETION PacketCompletionContext,
    UINT32 Flags,
    PMDL *Mdl);

/* ---- Outgoing packets (7.5) --------------------------------------------------------------- */

UINT32 VmbChannelSizeofPacket(VMBCHANNEL Channel);
VMBPACKET VmbPacketAllocate(VMBCHANNEL Channel);
NTSTATUS VmbPacketInitialize(VMBCHANNEL Channel, VMBPACKET VmbPacket, UINT32 ByteCount);
VOID VmbPacketFree(VMBPACKET VmbPacket);
VOID VmbPacketSetCompletionRoutine(VMBPACKET PacketObject, PFN_VMB_PACKET_COMPLETION_ROUTINE CompletionRoutine);
NTSTATUS VmbPacketSend(
    VMBPACKET PacketObject,
    PVOID Buffer,
    UINT32 BufferLength,
    PMDL ExternalDataMdl,
    UINT32 Flags);
NTSTATUS VmbPacketSendWithExternalMdl(
    VMBPACKET PacketObject,
    PVOID Buffer,
    UINT32 BufferLength,
    PMDL ExternalDataMdl,
    UINT32 MdlOffset,
    UINT32 MdlLength,
    UINT32 Flags);
NTSTATUS VmbPacketSendWithExternalPfns(
    VMBPACKET PacketObject,
    PVOID Buffer,
    UINT32 BufferLength,
    PPFN_NUMBER ExternalDataPfns,
    UINT32 PfnLength,
    UINT32 Flags);
NTSTATUS VmbChannelSendSynchronousRequest(
    VMBCHANNEL Channel,
    PVOID Buffer,
    UINT32 BufferSize,
    PMDL ExternalDataMdl,
    UINT32 Flags,
    PVOID CompletionBuffer,
    PUINT32 CompletionBufferSize,
    PLARGE_INTEGER Timeout);
VMBCHANNEL VmbPacketGetChannel(VMBPACKET PacketObject);
VOID VmbPacketSetPointer(VMBPACKET PacketObject, PVOID Pointer);
PVOID VmbPacketGetPointer(VMBPACKET PacketObject);

/* ---- GPADLs, client side (7.6) ---------------------------------------------------------- */

NTSTATUS VmbChannelCreateGpadlFromBuffer(
    VMBCHANNEL Channel,
    UINT32 Flags,
    PVOID Buffer,
    UINT32 ByteCount,
    PUINT32 GpadlHandle);
NTSTATUS VmbChannelCreateGpadlFromMdl(
    VMBCHANNEL Channel,
    UINT32 Flags,
    PMDL Mdl,
    UINT32 StartOffsetWithinMdl,
    UINT32 DataLengthWithinMdl,
    PUINT32 GpadlHandle);
VOID VmbChannelDeleteGpadl(VMBCHANNEL Channel, UINT32 GpadlHandle);

#endif /* VMBKMCL_PORTABLE_H */
