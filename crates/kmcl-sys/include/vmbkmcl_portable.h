/*
 * vmbkmcl_portable.h - a portable declaration of the client half of the VMBus Kernel Mode
 * Client Library (vmbuskernelmodeclientlibapi.h, WDK 10.0.16299 and later).
 *
 * Written for vmbmsg from the KMCL DDI reference (learn.microsoft.com), not copied from the WDK.
 * It exists so that the Rust bindings can be generated on machines that have no WDK: the
 * names, argument order and types are those of the WDK header, and the base types below are
 * spelled with fixed-width integers so that their sizes are the ones Windows uses (LLP64:
 * ULONG is 32 bits) whatever the host's C data model is.
 *
 * Declarations only. On Windows the bindings come from the WDK header itself; see build.rs.
 * Only the client half is declared: the 40 client functions, their FN_/PFN_ typedefs, the
 * KMCL_CLIENT_INTERFACE_V1 table (whose VmbChannelGetMmioSpace has no plain declaration
 * here: the table is the one way to reach it) and its identity. Server-only methods and the
 * later table versions (V2-V5) are left out. The declarations follow the shape of the
 * 10.0.22621 header: every function has an FN_ typedef, a PFN_ pointer typedef and a
 * declaration through the FN_ typedef, so that bindgen generates the same items from both.
 *
 * INTERFACE is the first member of the table, anonymous as in the WDK's C branch (an MS
 * extension: kmcl-sys-gen passes -fms-extensions). bindgen turns it into 32 bytes of padding
 * on both sides; kmcl-sys reads it through wdk-sys's / this header's INTERFACE.
 */
#ifndef VMBKMCL_PORTABLE_H
#define VMBKMCL_PORTABLE_H

#include <stdint.h>

/* ---- Windows base types, as wdk-sys names them ---------------------------------------- */

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
typedef unsigned long long UINT64;
typedef unsigned long long ULONG64;
typedef uint16_t *PUINT16;
typedef uint32_t *PUINT32;
typedef uint16_t WCHAR;
typedef WCHAR *PWCH;
/* x64 (and arm64) Windows: pointer-sized integers are 64-bit `unsigned __int64`, which
 * wdk-sys spells c_ulonglong (u64), never usize. */
typedef unsigned long long ULONG_PTR;
typedef ULONG64 PFN_NUMBER;
typedef ULONG64 *PPFN_NUMBER;
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
typedef struct _MDL *PMDL;
typedef struct _DEVICE_OBJECT DEVICE_OBJECT;
typedef struct _DEVICE_OBJECT *PDEVICE_OBJECT;

/* wdm.h: the header every PnP query-interface structure starts with. */
typedef void (*PINTERFACE_REFERENCE)(PVOID Context);
typedef void (*PINTERFACE_DEREFERENCE)(PVOID Context);
typedef struct _INTERFACE {
    USHORT Size;
    USHORT Version;
    PVOID Context;
    PINTERFACE_REFERENCE InterfaceReference;
    PINTERFACE_DEREFERENCE InterfaceDereference;
} INTERFACE, *PINTERFACE;

/* guiddef.h without INITGUID: a declaration. kmcl-sys's generators read the value from the
 * DEFINE_GUID line itself (bindgen_common.rs, guid_constant). */
#define DEFINE_GUID(name, l, w1, w2, b1, b2, b3, b4, b5, b6, b7, b8) extern const GUID name

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
/* 10.0.22621: the external MDL is only written (IN) or only read (OUT) by the peer. */
#define VMBUS_CHANNEL_FORMAT_FLAG_DATA_IN_ONLY 0x8
#define VMBUS_CHANNEL_FORMAT_FLAG_DATA_OUT_ONLY 0x10
#define VMBUS_CHANNEL_FORMAT_FLAGS \
    (VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION | VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH | \
     VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER | VMBUS_CHANNEL_FORMAT_FLAG_DATA_IN_ONLY | \
     VMBUS_CHANNEL_FORMAT_FLAG_DATA_OUT_ONLY)

#define VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY 0x1
#define VMBUS_CHANNEL_GPADL_FLAGS (VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY)

#define VMBUS_CHANNEL_INIT_FLAG_IS_PIPE 0x1
#define VMBUS_CHANNEL_INIT_FLAGS (VMBUS_CHANNEL_INIT_FLAG_IS_PIPE)

#define VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA 0x1
#define VMBUS_CHANNEL_PROCESS_PACKET_FLAGS (VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA)

#define VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY 0x1
#define VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAGS (VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY)

/* ---- Callbacks (reference section 8) ---------------------------------------------------- */

typedef NTSTATUS EVT_VMB_CHANNEL_OPENED(VMBCHANNEL Channel);
typedef EVT_VMB_CHANNEL_OPENED *PFN_VMB_CHANNEL_OPENED;

typedef void EVT_VMB_CHANNEL_CLOSED(VMBCHANNEL Channel);
typedef EVT_VMB_CHANNEL_CLOSED *PFN_VMB_CHANNEL_CLOSED;

typedef void EVT_VMB_CHANNEL_SUSPEND(VMBCHANNEL Channel);
typedef EVT_VMB_CHANNEL_SUSPEND *PFN_VMB_CHANNEL_SUSPEND;

typedef void EVT_VMB_CHANNEL_STARTED(VMBCHANNEL Channel);
typedef EVT_VMB_CHANNEL_STARTED *PFN_VMB_CHANNEL_STARTED;

typedef void EVT_VMB_CHANNEL_POST_STARTED(VMBCHANNEL Channel);
typedef EVT_VMB_CHANNEL_POST_STARTED *PFN_VMB_CHANNEL_POST_STARTED;

typedef void EVT_VMB_CHANNEL_PROCESS_PACKET(
    VMBCHANNEL Channel,
    VMBPACKETCOMPLETION Packet,
    PVOID Buffer,
    UINT32 BufferLength,
    UINT32 Flags);
typedef EVT_VMB_CHANNEL_PROCESS_PACKET *PFN_VMB_CHANNEL_PROCESS_PACKET;

typedef void EVT_VMB_CHANNEL_PROCESSING_COMPLETE(VMBCHANNEL Channel, UINT32 PacketsProcessed);
typedef EVT_VMB_CHANNEL_PROCESSING_COMPLETE *PFN_VMB_CHANNEL_PROCESSING_COMPLETE;

typedef void EVT_VMB_CHANNEL_PNP_FAILURE(VMBCHANNEL Channel, NTSTATUS FailureStatus);
typedef EVT_VMB_CHANNEL_PNP_FAILURE *PFN_VMB_CHANNEL_PNP_FAILURE;

typedef void EVT_VMB_PACKET_COMPLETION_ROUTINE(
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

/* ---- The client functions (reference section 7), in KMCL_CLIENT_INTERFACE_V1 order ---------
 *
 * Each as the WDK declares it: FN_x is the function type, PFN_x a pointer to it (a table
 * member), and the plain declaration goes through FN_x. VmbChannelGetMmioSpace has no plain
 * declaration: it is reached only through the table.
 */

typedef NTSTATUS FN_VMB_CHANNEL_ALLOCATE(
    PDEVICE_OBJECT ParentDeviceObject,
    BOOLEAN IsServer,
    VMBCHANNEL *Channel);
typedef FN_VMB_CHANNEL_ALLOCATE *PFN_VMB_CHANNEL_ALLOCATE;
FN_VMB_CHANNEL_ALLOCATE VmbChannelAllocate;

typedef void FN_VMB_CHANNEL_CLEANUP(
    VMBCHANNEL Channel);
typedef FN_VMB_CHANNEL_CLEANUP *PFN_VMB_CHANNEL_CLEANUP;
FN_VMB_CHANNEL_CLEANUP VmbChannelCleanup;

typedef NTSTATUS FN_VMB_CHANNEL_CREATE_GPADL_FROM_BUFFER(
    VMBCHANNEL Channel,
    UINT32 Flags,
    PVOID Buffer,
    UINT32 ByteCount,
    PUINT32 GpadlHandle);
typedef FN_VMB_CHANNEL_CREATE_GPADL_FROM_BUFFER *PFN_VMB_CHANNEL_CREATE_GPADL_FROM_BUFFER;
FN_VMB_CHANNEL_CREATE_GPADL_FROM_BUFFER VmbChannelCreateGpadlFromBuffer;

typedef NTSTATUS FN_VMB_CHANNEL_CREATE_GPADL_FROM_MDL(
    VMBCHANNEL Channel,
    UINT32 Flags,
    PMDL Mdl,
    UINT32 StartOffsetWithinMdl,
    UINT32 DataLengthWithinMdl,
    PUINT32 GpadlHandle);
typedef FN_VMB_CHANNEL_CREATE_GPADL_FROM_MDL *PFN_VMB_CHANNEL_CREATE_GPADL_FROM_MDL;
FN_VMB_CHANNEL_CREATE_GPADL_FROM_MDL VmbChannelCreateGpadlFromMdl;

typedef void FN_VMB_CHANNEL_DELETE_GPADL(
    VMBCHANNEL Channel,
    UINT32 GpadlHandle);
typedef FN_VMB_CHANNEL_DELETE_GPADL *PFN_VMB_CHANNEL_DELETE_GPADL;
FN_VMB_CHANNEL_DELETE_GPADL VmbChannelDeleteGpadl;

typedef void FN_VMB_CHANNEL_DISABLE(
    VMBCHANNEL Channel);
typedef FN_VMB_CHANNEL_DISABLE *PFN_VMB_CHANNEL_DISABLE;
FN_VMB_CHANNEL_DISABLE VmbChannelDisable;

typedef NTSTATUS FN_VMB_CHANNEL_ENABLE(
    VMBCHANNEL Channel);
typedef FN_VMB_CHANNEL_ENABLE *PFN_VMB_CHANNEL_ENABLE;
FN_VMB_CHANNEL_ENABLE VmbChannelEnable;

typedef void FN_VMB_CHANNEL_GET_INTERFACE_INSTANCE(
    VMBCHANNEL Channel,
    LPGUID InterfaceInstance);
typedef FN_VMB_CHANNEL_GET_INTERFACE_INSTANCE *PFN_VMB_CHANNEL_GET_INTERFACE_INSTANCE;
FN_VMB_CHANNEL_GET_INTERFACE_INSTANCE VmbChannelGetInterfaceInstance;

typedef void FN_VMB_CHANNEL_GET_MMIO_SPACE(
    VMBCHANNEL Channel,
    UINT64 *MmioAddress,
    UINT64 *MmioSize);
typedef FN_VMB_CHANNEL_GET_MMIO_SPACE *PFN_VMB_CHANNEL_GET_MMIO_SPACE;

typedef PVOID FN_VMB_CHANNEL_GET_POINTER(
    VMBCHANNEL Channel);
typedef FN_VMB_CHANNEL_GET_POINTER *PFN_VMB_CHANNEL_GET_POINTER;
FN_VMB_CHANNEL_GET_POINTER VmbChannelGetPointer;

typedef NTSTATUS FN_VMB_CHANNEL_INIT_SET_CLIENT_CONTEXT_SIZE(
    VMBCHANNEL Channel,
    UINT32 ContextSize);
typedef FN_VMB_CHANNEL_INIT_SET_CLIENT_CONTEXT_SIZE *PFN_VMB_CHANNEL_INIT_SET_CLIENT_CONTEXT_SIZE;
FN_VMB_CHANNEL_INIT_SET_CLIENT_CONTEXT_SIZE VmbChannelInitSetClientContextSize;

typedef NTSTATUS FN_VMB_CHANNEL_INIT_SET_FLAGS(
    VMBCHANNEL Channel,
    UINT32 Flags);
typedef FN_VMB_CHANNEL_INIT_SET_FLAGS *PFN_VMB_CHANNEL_INIT_SET_FLAGS;
FN_VMB_CHANNEL_INIT_SET_FLAGS VmbChannelInitSetFlags;

typedef NTSTATUS FN_VMB_CHANNEL_INIT_SET_FRIENDLY_NAME(
    VMBCHANNEL Channel,
    PCUNICODE_STRING Name);
typedef FN_VMB_CHANNEL_INIT_SET_FRIENDLY_NAME *PFN_VMB_CHANNEL_INIT_SET_FRIENDLY_NAME;
FN_VMB_CHANNEL_INIT_SET_FRIENDLY_NAME VmbChannelInitSetFriendlyName;

typedef NTSTATUS FN_VMB_CHANNEL_INIT_SET_MAXIMUM_EXTERNAL_DATA(
    VMBCHANNEL Channel,
    UINT32 DataSize,
    UINT32 ChainLength);
typedef FN_VMB_CHANNEL_INIT_SET_MAXIMUM_EXTERNAL_DATA *PFN_VMB_CHANNEL_INIT_SET_MAXIMUM_EXTERNAL_DATA;
FN_VMB_CHANNEL_INIT_SET_MAXIMUM_EXTERNAL_DATA VmbChannelInitSetMaximumExternalData;

typedef NTSTATUS FN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_SIZE(
    VMBCHANNEL Channel,
    UINT32 PacketSize);
typedef FN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_SIZE *PFN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_SIZE;
FN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_SIZE VmbChannelInitSetMaximumPacketSize;

typedef NTSTATUS FN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS(
    VMBCHANNEL Channel,
    PFN_VMB_CHANNEL_PROCESS_PACKET ProcessPacketCallback,
    PFN_VMB_CHANNEL_PROCESSING_COMPLETE ProcessingCompleteCallback);
typedef FN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS *PFN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS;
FN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS VmbChannelInitSetProcessPacketCallbacks;

typedef NTSTATUS FN_VMB_CHANNEL_INIT_SET_STATE_CHANGE_CALLBACKS(
    VMBCHANNEL Channel,
    PVMB_CHANNEL_STATE_CHANGE_CALLBACKS StateChangeCallbacks);
typedef FN_VMB_CHANNEL_INIT_SET_STATE_CHANGE_CALLBACKS *PFN_VMB_CHANNEL_INIT_SET_STATE_CHANGE_CALLBACKS;
FN_VMB_CHANNEL_INIT_SET_STATE_CHANGE_CALLBACKS VmbChannelInitSetStateChangeCallbacks;

typedef void FN_VMB_CHANNEL_PACKET_COMPLETE(
    VMBPACKETCOMPLETION PacketCompletionContext,
    PVOID PacketCompletionBuffer,
    UINT32 BufSize);
typedef FN_VMB_CHANNEL_PACKET_COMPLETE *PFN_VMB_CHANNEL_PACKET_COMPLETE;
FN_VMB_CHANNEL_PACKET_COMPLETE VmbChannelPacketComplete;

typedef void FN_VMB_CHANNEL_PACKET_DEFER_TO_PASSIVE(
    VMBPACKETCOMPLETION PacketCompletionContext);
typedef FN_VMB_CHANNEL_PACKET_DEFER_TO_PASSIVE *PFN_VMB_CHANNEL_PACKET_DEFER_TO_PASSIVE;
FN_VMB_CHANNEL_PACKET_DEFER_TO_PASSIVE VmbChannelPacketDeferToPassive;

typedef void FN_VMB_CHANNEL_PACKET_FAIL(
    VMBPACKETCOMPLETION PacketCompletionContext);
typedef FN_VMB_CHANNEL_PACKET_FAIL *PFN_VMB_CHANNEL_PACKET_FAIL;
FN_VMB_CHANNEL_PACKET_FAIL VmbChannelPacketFail;

typedef NTSTATUS FN_VMB_CHANNEL_PACKET_GET_EXTERNAL_DATA(
    VMBPACKETCOMPLETION PacketCompletionContext,
    UINT32 Flags,
    PMDL *Mdl);
typedef FN_VMB_CHANNEL_PACKET_GET_EXTERNAL_DATA *PFN_VMB_CHANNEL_PACKET_GET_EXTERNAL_DATA;
FN_VMB_CHANNEL_PACKET_GET_EXTERNAL_DATA VmbChannelPacketGetExternalData;

typedef void FN_VMB_CHANNEL_PAUSE(
    VMBCHANNEL Channel);
typedef FN_VMB_CHANNEL_PAUSE *PFN_VMB_CHANNEL_PAUSE;
FN_VMB_CHANNEL_PAUSE VmbChannelPause;

typedef NTSTATUS FN_VMB_CHANNEL_SEND_SYNCHRONOUS_REQUEST(
    VMBCHANNEL Channel,
    PVOID Buffer,
    UINT32 BufferSize,
    PMDL ExternalDataMdl,
    UINT32 Flags,
    PVOID CompletionBuffer,
    PUINT32 CompletionBufferSize,
    PLARGE_INTEGER Timeout);
typedef FN_VMB_CHANNEL_SEND_SYNCHRONOUS_REQUEST *PFN_VMB_CHANNEL_SEND_SYNCHRONOUS_REQUEST;
FN_VMB_CHANNEL_SEND_SYNCHRONOUS_REQUEST VmbChannelSendSynchronousRequest;

typedef void FN_VMB_CHANNEL_SET_INCOMING_PROCESSING_AT_PASSIVE(
    VMBCHANNEL Channel,
    BOOLEAN RequirePassive);
typedef FN_VMB_CHANNEL_SET_INCOMING_PROCESSING_AT_PASSIVE *PFN_VMB_CHANNEL_SET_INCOMING_PROCESSING_AT_PASSIVE;
FN_VMB_CHANNEL_SET_INCOMING_PROCESSING_AT_PASSIVE VmbChannelSetIncomingProcessingAtPassive;

typedef NTSTATUS FN_VMB_CHANNEL_SET_INTERRUPT_LATENCY(
    VMBCHANNEL Channel,
    UINT16 Latency,
    PUINT16 OriginalLatency);
typedef FN_VMB_CHANNEL_SET_INTERRUPT_LATENCY *PFN_VMB_CHANNEL_SET_INTERRUPT_LATENCY;
FN_VMB_CHANNEL_SET_INTERRUPT_LATENCY VmbChannelSetInterruptLatency;

typedef void FN_VMB_CHANNEL_SET_POINTER(
    VMBCHANNEL Channel,
    PVOID Pointer);
typedef FN_VMB_CHANNEL_SET_POINTER *PFN_VMB_CHANNEL_SET_POINTER;
FN_VMB_CHANNEL_SET_POINTER VmbChannelSetPointer;

typedef void FN_VMB_CHANNEL_SET_TRANSACTION_QUOTA(
    VMBCHANNEL Channel,
    UINT32 Quota);
typedef FN_VMB_CHANNEL_SET_TRANSACTION_QUOTA *PFN_VMB_CHANNEL_SET_TRANSACTION_QUOTA;
FN_VMB_CHANNEL_SET_TRANSACTION_QUOTA VmbChannelSetTransactionQuota;

typedef UINT32 FN_VMB_CHANNEL_SIZEOF_PACKET(
    VMBCHANNEL Channel);
typedef FN_VMB_CHANNEL_SIZEOF_PACKET *PFN_VMB_CHANNEL_SIZEOF_PACKET;
FN_VMB_CHANNEL_SIZEOF_PACKET VmbChannelSizeofPacket;

typedef void FN_VMB_CHANNEL_START(
    VMBCHANNEL Channel);
typedef FN_VMB_CHANNEL_START *PFN_VMB_CHANNEL_START;
FN_VMB_CHANNEL_START VmbChannelStart;

typedef NTSTATUS FN_VMB_CLIENT_CHANNEL_INIT_SET_RING_BUFFER_PAGE_COUNT(
    VMBCHANNEL Channel,
    UINT32 IncomingPageCount,
    UINT32 OutgoingPageCount);
typedef FN_VMB_CLIENT_CHANNEL_INIT_SET_RING_BUFFER_PAGE_COUNT *PFN_VMB_CLIENT_CHANNEL_INIT_SET_RING_BUFFER_PAGE_COUNT;
FN_VMB_CLIENT_CHANNEL_INIT_SET_RING_BUFFER_PAGE_COUNT VmbClientChannelInitSetRingBufferPageCount;

typedef NTSTATUS FN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PNP(
    VMBCHANNEL Channel,
    LPCGUID InterfaceType,
    LPCGUID InterfaceInstance,
    PFN_VMB_CHANNEL_PNP_FAILURE PnpFailureCallback);
typedef FN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PNP *PFN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PNP;
FN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PNP VmbClientChannelInitSetTargetPnp;

typedef VMBPACKET FN_VMB_PACKET_ALLOCATE(
    VMBCHANNEL Channel);
typedef FN_VMB_PACKET_ALLOCATE *PFN_VMB_PACKET_ALLOCATE;
FN_VMB_PACKET_ALLOCATE VmbPacketAllocate;

typedef void FN_VMB_PACKET_FREE(
    VMBPACKET VmbPacket);
typedef FN_VMB_PACKET_FREE *PFN_VMB_PACKET_FREE;
FN_VMB_PACKET_FREE VmbPacketFree;

typedef VMBCHANNEL FN_VMB_PACKET_GET_CHANNEL(
    VMBPACKET PacketObject);
typedef FN_VMB_PACKET_GET_CHANNEL *PFN_VMB_PACKET_GET_CHANNEL;
FN_VMB_PACKET_GET_CHANNEL VmbPacketGetChannel;

typedef PVOID FN_VMB_PACKET_GET_POINTER(
    VMBPACKET PacketObject);
typedef FN_VMB_PACKET_GET_POINTER *PFN_VMB_PACKET_GET_POINTER;
FN_VMB_PACKET_GET_POINTER VmbPacketGetPointer;

typedef NTSTATUS FN_VMB_PACKET_INITIALIZE(
    VMBCHANNEL Channel,
    VMBPACKET VmbPacket,
    UINT32 ByteCount);
typedef FN_VMB_PACKET_INITIALIZE *PFN_VMB_PACKET_INITIALIZE;
FN_VMB_PACKET_INITIALIZE VmbPacketInitialize;

typedef NTSTATUS FN_VMB_PACKET_SEND(
    VMBPACKET PacketObject,
    PVOID Buffer,
    UINT32 BufferLength,
    PMDL ExternalDataMdl,
    UINT32 Flags);
typedef FN_VMB_PACKET_SEND *PFN_VMB_PACKET_SEND;
FN_VMB_PACKET_SEND VmbPacketSend;

typedef NTSTATUS FN_VMB_PACKET_SEND_WITH_EXTERNAL_MDL(
    VMBPACKET PacketObject,
    PVOID Buffer,
    UINT32 BufferLength,
    PMDL ExternalDataMdl,
    UINT32 MdlOffset,
    UINT32 MdlLength,
    UINT32 Flags);
typedef FN_VMB_PACKET_SEND_WITH_EXTERNAL_MDL *PFN_VMB_PACKET_SEND_WITH_EXTERNAL_MDL;
FN_VMB_PACKET_SEND_WITH_EXTERNAL_MDL VmbPacketSendWithExternalMdl;

typedef NTSTATUS FN_VMB_PACKET_SEND_WITH_EXTERNAL_PFNS(
    VMBPACKET PacketObject,
    PVOID Buffer,
    UINT32 BufferLength,
    PPFN_NUMBER ExternalDataPfns,
    UINT32 PfnLength,
    UINT32 Flags);
typedef FN_VMB_PACKET_SEND_WITH_EXTERNAL_PFNS *PFN_VMB_PACKET_SEND_WITH_EXTERNAL_PFNS;
FN_VMB_PACKET_SEND_WITH_EXTERNAL_PFNS VmbPacketSendWithExternalPfns;

typedef void FN_VMB_PACKET_SET_COMPLETION_ROUTINE(
    VMBPACKET PacketObject,
    PFN_VMB_PACKET_COMPLETION_ROUTINE CompletionRoutine);
typedef FN_VMB_PACKET_SET_COMPLETION_ROUTINE *PFN_VMB_PACKET_SET_COMPLETION_ROUTINE;
FN_VMB_PACKET_SET_COMPLETION_ROUTINE VmbPacketSetCompletionRoutine;

typedef void FN_VMB_PACKET_SET_POINTER(
    VMBPACKET PacketObject,
    PVOID Pointer);
typedef FN_VMB_PACKET_SET_POINTER *PFN_VMB_PACKET_SET_POINTER;
FN_VMB_PACKET_SET_POINTER VmbPacketSetPointer;

/* ---- The client interface table (wdm.h INTERFACE + the functions above) ----------------- */

#define KMCL_CLIENT_INTERFACE_VERSION_V1 1
#define KMCL_CLIENT_INTERFACE_VERSION_V2 2

/* 4aecb860-e161-42bb-a5ca-77f3a9645905 */
DEFINE_GUID(KMCL_CLIENT_INTERFACE_TYPE, 0x4aecb860, 0xe161, 0x42bb, 0xa5, 0xca, 0x77, 0xf3, 0xa9, 0x64, 0x59, 0x05);

typedef struct _KMCL_CLIENT_INTERFACE_V1 {
    INTERFACE;
    PFN_VMB_CHANNEL_ALLOCATE                               VmbChannelAllocate;
    PFN_VMB_CHANNEL_CLEANUP                                VmbChannelCleanup;
    PFN_VMB_CHANNEL_CREATE_GPADL_FROM_BUFFER               VmbChannelCreateGpadlFromBuffer;
    PFN_VMB_CHANNEL_CREATE_GPADL_FROM_MDL                  VmbChannelCreateGpadlFromMdl;
    PFN_VMB_CHANNEL_DELETE_GPADL                           VmbChannelDeleteGpadl;
    PFN_VMB_CHANNEL_DISABLE                                VmbChannelDisable;
    PFN_VMB_CHANNEL_ENABLE                                 VmbChannelEnable;
    PFN_VMB_CHANNEL_GET_INTERFACE_INSTANCE                 VmbChannelGetInterfaceInstance;
    PFN_VMB_CHANNEL_GET_MMIO_SPACE                         VmbChannelGetMmioSpace;
    PFN_VMB_CHANNEL_GET_POINTER                            VmbChannelGetPointer;
    PFN_VMB_CHANNEL_INIT_SET_CLIENT_CONTEXT_SIZE           VmbChannelInitSetClientContextSize;
    PFN_VMB_CHANNEL_INIT_SET_FLAGS                         VmbChannelInitSetFlags;
    PFN_VMB_CHANNEL_INIT_SET_FRIENDLY_NAME                 VmbChannelInitSetFriendlyName;
    PFN_VMB_CHANNEL_INIT_SET_MAXIMUM_EXTERNAL_DATA         VmbChannelInitSetMaximumExternalData;
    PFN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_SIZE           VmbChannelInitSetMaximumPacketSize;
    PFN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS      VmbChannelInitSetProcessPacketCallbacks;
    PFN_VMB_CHANNEL_INIT_SET_STATE_CHANGE_CALLBACKS        VmbChannelInitSetStateChangeCallbacks;
    PFN_VMB_CHANNEL_PACKET_COMPLETE                        VmbChannelPacketComplete;
    PFN_VMB_CHANNEL_PACKET_DEFER_TO_PASSIVE                VmbChannelPacketDeferToPassive;
    PFN_VMB_CHANNEL_PACKET_FAIL                            VmbChannelPacketFail;
    PFN_VMB_CHANNEL_PACKET_GET_EXTERNAL_DATA               VmbChannelPacketGetExternalData;
    PFN_VMB_CHANNEL_PAUSE                                  VmbChannelPause;
    PFN_VMB_CHANNEL_SEND_SYNCHRONOUS_REQUEST               VmbChannelSendSynchronousRequest;
    PFN_VMB_CHANNEL_SET_INCOMING_PROCESSING_AT_PASSIVE     VmbChannelSetIncomingProcessingAtPassive;
    PFN_VMB_CHANNEL_SET_INTERRUPT_LATENCY                  VmbChannelSetInterruptLatency;
    PFN_VMB_CHANNEL_SET_POINTER                            VmbChannelSetPointer;
    PFN_VMB_CHANNEL_SET_TRANSACTION_QUOTA                  VmbChannelSetTransactionQuota;
    PFN_VMB_CHANNEL_SIZEOF_PACKET                          VmbChannelSizeofPacket;
    PFN_VMB_CHANNEL_START                                  VmbChannelStart;
    PFN_VMB_CLIENT_CHANNEL_INIT_SET_RING_BUFFER_PAGE_COUNT VmbClientChannelInitSetRingBufferPageCount;
    PFN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PNP             VmbClientChannelInitSetTargetPnp;
    PFN_VMB_PACKET_ALLOCATE                                VmbPacketAllocate;
    PFN_VMB_PACKET_FREE                                    VmbPacketFree;
    PFN_VMB_PACKET_GET_CHANNEL                             VmbPacketGetChannel;
    PFN_VMB_PACKET_GET_POINTER                             VmbPacketGetPointer;
    PFN_VMB_PACKET_INITIALIZE                              VmbPacketInitialize;
    PFN_VMB_PACKET_SEND                                    VmbPacketSend;
    PFN_VMB_PACKET_SEND_WITH_EXTERNAL_MDL                  VmbPacketSendWithExternalMdl;
    PFN_VMB_PACKET_SEND_WITH_EXTERNAL_PFNS                 VmbPacketSendWithExternalPfns;
    PFN_VMB_PACKET_SET_COMPLETION_ROUTINE                  VmbPacketSetCompletionRoutine;
    PFN_VMB_PACKET_SET_POINTER                             VmbPacketSetPointer;
} KMCL_CLIENT_INTERFACE_V1, *PKMCL_CLIENT_INTERFACE_V1;

#endif /* VMBKMCL_PORTABLE_H */
