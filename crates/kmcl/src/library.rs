//! How a driver reaches KMCL: [`Library`], the client interface table the VMBus bus driver hands
//! out (the default), or the plain functions of `vmbkmcl.lib` (feature `linked`).
//!
//! Every KMCL call of this crate goes through a `KMCL_CLIENT_INTERFACE_V1` table:
//!
//! * **Queried** ([`Library::query`]): what current Windows documents (learn.microsoft.com,
//!   `_KMCL_CLIENT_INTERFACE_V1`, and every `nc-vmbuskernelmodeclientlibapi-fn_vmb_*` page since
//!   2018): the driver queries `KMCL_CLIENT_INTERFACE_TYPE` on its own device stack
//!   (`WdfFdoQueryForInterface`) and the bus driver fills in the table and takes one reference
//!   on the interface for the caller.
//! * **Linked** ([`Library::linked`], feature `linked`): a table of the plain functions, which
//!   `vmbkmcl.lib` provides on WDKs that still ship it (kmcl-sys's `link` feature links it).
//!
//! # References and lifetimes
//!
//! A [`Library`] owns one reference on the interface and releases it (`InterfaceDereference`)
//! exactly once, when dropped; [`Clone`] takes another (`InterfaceReference`), as the PnP rules
//! ask of anyone who copies an interface. Every channel keeps its own clone, from
//! [`ChannelBuilder::new`](crate::ChannelBuilder::new) until `VmbChannelCleanup` has returned,
//! so no channel, packet or callback can use the table after its reference is gone, however the
//! driver orders its teardown. What the compiler cannot see is spelt out where it matters: a
//! device releases its own `Library` before its PDO can go away (the WDF shell does it in the
//! device's cleanup callback).
//!
//! # Callbacks
//!
//! KMCL hands its callbacks a bare handle (a `VMBCHANNEL`, a `VMBPACKET`, a completion token)
//! and no context, so the callback side cannot find the channel's table before it has called
//! one of them (`VmbChannelGetPointer` finds the channel's context). Those six entry points
//! (the two `Get*Pointer`s, `VmbPacketFree` for completion routines, and the three ways to
//! retire an incoming packet) are recorded driver-wide from the first `Library` made; every later
//! one must point at the same functions (one vmbkmcl.sys serves every device; the model's table
//! and its plain functions are the same functions) or it is refused. They are only called from
//! objects that exist while a channel does, and every channel holds a reference.

use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use kmcl_sys as sys;
use ntstatus::NtStatus;

/// The table and the interface header it came with (copied out through the typed view, so that
/// the `Context` pointer keeps its provenance; kmcl-sys `interface_header`).
#[derive(Clone, Copy)]
pub(crate) struct Api {
    pub(crate) table: sys::KMCL_CLIENT_INTERFACE_V1,
    context: sys::PVOID,
    reference: sys::PINTERFACE_REFERENCE,
    dereference: sys::PINTERFACE_DEREFERENCE,
}

/// Calls table member `$f` of `$api` with the arguments, or evaluates `$missing` if the slot is
/// empty (never, for a table [`Library`] accepted: it checks every slot it needs).
macro_rules! kmcl_call {
    ($api:expr, $f:ident($($arg:expr),* $(,)?), $missing:expr) => {
        match $api.table.$f {
            Some(f) => f($($arg),*),
            None => $missing,
        }
    };
}
pub(crate) use kmcl_call;

/// KMCL, as this driver reaches it: a client interface table and one reference on it.
///
/// `Send + Sync`: the table is read-only once made, and the interface's reference functions may
/// be called from any thread.
pub struct Library {
    api: Api,
}

// SAFETY: the table is immutable after construction; `Context` is the provider's and is only
// passed back to the provider's own functions, which PnP interfaces allow from any thread.
unsafe impl Send for Library {}
// SAFETY: as above: shared access only reads the table.
unsafe impl Sync for Library {}

impl core::fmt::Debug for Library {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Library")
            .field("queried", &self.is_queried())
            .field(
                "mmio_space",
                &self.api.table.VmbChannelGetMmioSpace.is_some(),
            )
            .finish_non_exhaustive()
    }
}

/// The seven callback-side entry points (module docs, "Callbacks"), as raw function addresses.
///
/// The two that every delivery calls are never null, so that loading one is all a call needs
/// (like a C driver's call through its table): until a `Library` records KMCL's, they hold
/// [`unset_channel_get_pointer`] and [`unset_packet_complete`], which do what a null entry did
/// (find no context; retire nothing). The other five start null ([`entry`]).
pub(crate) static CHANNEL_GET_POINTER: AtomicPtr<()> =
    AtomicPtr::new(unset_channel_get_pointer as *mut ());
pub(crate) static PACKET_GET_POINTER: AtomicPtr<()> = AtomicPtr::new(ptr::null_mut());
pub(crate) static PACKET_FREE: AtomicPtr<()> = AtomicPtr::new(ptr::null_mut());
pub(crate) static PACKET_COMPLETE: AtomicPtr<()> = AtomicPtr::new(unset_packet_complete as *mut ());
pub(crate) static PACKET_FAIL: AtomicPtr<()> = AtomicPtr::new(ptr::null_mut());
pub(crate) static PACKET_DEFER: AtomicPtr<()> = AtomicPtr::new(ptr::null_mut());
pub(crate) static PACKET_EXTERNAL: AtomicPtr<()> = AtomicPtr::new(ptr::null_mut());

/// [`CHANNEL_GET_POINTER`] before any `Library` recorded KMCL's: no channel has a context.
unsafe extern "C" fn unset_channel_get_pointer(_channel: sys::VMBCHANNEL) -> sys::PVOID {
    ptr::null_mut()
}

/// [`PACKET_COMPLETE`] before any `Library` recorded KMCL's: nothing to retire the packet with.
unsafe extern "C" fn unset_packet_complete(
    _packet: sys::VMBPACKETCOMPLETION,
    _buffer: sys::PVOID,
    _length: sys::UINT32,
) {
}

/// Records `f` in `slot`, or checks that `slot` already holds it (`unset`: what the slot holds
/// before anything is recorded).
fn record(slot: &AtomicPtr<()>, unset: *mut (), f: *mut ()) -> Result<(), NtStatus> {
    match slot.compare_exchange(unset, f, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Ok(()),
        Err(current) if current == f => Ok(()),
        Err(_) => Err(NtStatus::STATUS_NOT_SUPPORTED),
    }
}

/// Loads one of the two never-null entry points ([`CHANNEL_GET_POINTER`],
/// [`PACKET_COMPLETE`]) as its function type.
macro_rules! hot_entry {
    ($slot:ident as $ty:ty) => {{
        let raw = $crate::library::$slot.load(core::sync::atomic::Ordering::Acquire);
        // SAFETY: the slot holds either its `unset_*` function or what `record_entries`
        // stored, in both cases the address of a function of exactly this type (never null,
        // never changed after it was recorded); function pointers and `*mut ()` have the same
        // size on every supported target.
        unsafe { core::mem::transmute::<*mut (), $ty>(raw) }
    }};
}
pub(crate) use hot_entry;

/// Loads a recorded entry point as the function type `F` it was recorded from.
macro_rules! entry {
    ($slot:ident as $ty:ty) => {{
        let raw = $crate::library::$slot.load(core::sync::atomic::Ordering::Acquire);
        if raw.is_null() {
            None
        } else {
            // SAFETY: `record_entries` stores in this slot only the address of a function of
            // exactly this type (taken from the table member of that type), and never changes
            // it afterwards; function pointers and `*mut ()` have the same size on every
            // supported target.
            Some(unsafe { core::mem::transmute::<*mut (), $ty>(raw) })
        }
    }};
}
pub(crate) use entry;

/// The function types of the recorded entry points.
pub(crate) type ChannelGetPointerFn = unsafe extern "C" fn(sys::VMBCHANNEL) -> sys::PVOID;
pub(crate) type PacketGetPointerFn = unsafe extern "C" fn(sys::VMBPACKET) -> sys::PVOID;
pub(crate) type PacketFreeFn = unsafe extern "C" fn(sys::VMBPACKET);
pub(crate) type PacketCompleteFn =
    unsafe extern "C" fn(sys::VMBPACKETCOMPLETION, sys::PVOID, sys::UINT32);
pub(crate) type PacketRetireFn = unsafe extern "C" fn(sys::VMBPACKETCOMPLETION);
pub(crate) type PacketExternalFn =
    unsafe extern "C" fn(sys::VMBPACKETCOMPLETION, sys::UINT32, *mut sys::PMDL) -> sys::NTSTATUS;

/// The members every table must have: all but `VmbChannelGetMmioSpace` (optional: the linked
/// library has no plain declaration of it).
fn complete(t: &sys::KMCL_CLIENT_INTERFACE_V1) -> bool {
    t.VmbChannelAllocate.is_some()
        && t.VmbChannelCleanup.is_some()
        && t.VmbChannelCreateGpadlFromBuffer.is_some()
        && t.VmbChannelCreateGpadlFromMdl.is_some()
        && t.VmbChannelDeleteGpadl.is_some()
        && t.VmbChannelDisable.is_some()
        && t.VmbChannelEnable.is_some()
        && t.VmbChannelGetInterfaceInstance.is_some()
        && t.VmbChannelGetPointer.is_some()
        && t.VmbChannelInitSetClientContextSize.is_some()
        && t.VmbChannelInitSetFlags.is_some()
        && t.VmbChannelInitSetFriendlyName.is_some()
        && t.VmbChannelInitSetMaximumExternalData.is_some()
        && t.VmbChannelInitSetMaximumPacketSize.is_some()
        && t.VmbChannelInitSetProcessPacketCallbacks.is_some()
        && t.VmbChannelInitSetStateChangeCallbacks.is_some()
        && t.VmbChannelPacketComplete.is_some()
        && t.VmbChannelPacketDeferToPassive.is_some()
        && t.VmbChannelPacketFail.is_some()
        && t.VmbChannelPacketGetExternalData.is_some()
        && t.VmbChannelPause.is_some()
        && t.VmbChannelSendSynchronousRequest.is_some()
        && t.VmbChannelSetIncomingProcessingAtPassive.is_some()
        && t.VmbChannelSetInterruptLatency.is_some()
        && t.VmbChannelSetPointer.is_some()
        && t.VmbChannelSetTransactionQuota.is_some()
        && t.VmbChannelSizeofPacket.is_some()
        && t.VmbChannelStart.is_some()
        && t.VmbClientChannelInitSetRingBufferPageCount.is_some()
        && t.VmbClientChannelInitSetTargetPnp.is_some()
        && t.VmbPacketAllocate.is_some()
        && t.VmbPacketFree.is_some()
        && t.VmbPacketGetChannel.is_some()
        && t.VmbPacketGetPointer.is_some()
        && t.VmbPacketInitialize.is_some()
        && t.VmbPacketSend.is_some()
        && t.VmbPacketSendWithExternalMdl.is_some()
        && t.VmbPacketSendWithExternalPfns.is_some()
        && t.VmbPacketSetCompletionRoutine.is_some()
        && t.VmbPacketSetPointer.is_some()
}

/// Records the callback-side entry points of `t` (module docs, "Callbacks").
fn record_entries(t: &sys::KMCL_CLIENT_INTERFACE_V1) -> Result<(), NtStatus> {
    let missing = NtStatus::STATUS_NOT_SUPPORTED;
    let get_channel: ChannelGetPointerFn = t.VmbChannelGetPointer.ok_or(missing)?;
    let get_packet: PacketGetPointerFn = t.VmbPacketGetPointer.ok_or(missing)?;
    let free: PacketFreeFn = t.VmbPacketFree.ok_or(missing)?;
    let complete: PacketCompleteFn = t.VmbChannelPacketComplete.ok_or(missing)?;
    let fail: PacketRetireFn = t.VmbChannelPacketFail.ok_or(missing)?;
    let defer: PacketRetireFn = t.VmbChannelPacketDeferToPassive.ok_or(missing)?;
    let external: PacketExternalFn = t.VmbChannelPacketGetExternalData.ok_or(missing)?;
    // All or nothing would need a lock; these only ever go from null to one value, so a refused
    // table can at most have recorded entries that equal any later accepted table's.
    let null = ptr::null_mut();
    record(
        &CHANNEL_GET_POINTER,
        unset_channel_get_pointer as *mut (),
        get_channel as *mut (),
    )?;
    record(&PACKET_GET_POINTER, null, get_packet as *mut ())?;
    record(&PACKET_FREE, null, free as *mut ())?;
    record(
        &PACKET_COMPLETE,
        unset_packet_complete as *mut (),
        complete as *mut (),
    )?;
    record(&PACKET_FAIL, null, fail as *mut ())?;
    record(&PACKET_DEFER, null, defer as *mut ())?;
    record(&PACKET_EXTERNAL, null, external as *mut ())
}

impl Library {
    /// Queries the client interface through `query` and takes ownership of the reference a
    /// successful query returns.
    ///
    /// `query` performs the PnP query for `KMCL_CLIENT_INTERFACE_TYPE` with the given interface
    /// buffer, size and version (in a KMDF driver: `WdfFdoQueryForInterface(device, type,
    /// interface, size, version, NULL)` on the driver's own device) and returns its status.
    /// `sizeof(KMCL_CLIENT_INTERFACE_V1)` with `KMCL_CLIENT_INTERFACE_VERSION_V1` is what
    /// in-box clients ask for (dxgkrnl's query: Size 0x168, Version 1).
    ///
    /// # Errors
    /// The query's status when it fails; `STATUS_NOT_SUPPORTED` when the provider answered with
    /// a different size or version or left a needed slot empty, or when its functions are not
    /// those of a `Library` made before (module docs, "Callbacks"). A table refused after a
    /// successful query is dereferenced once before this returns.
    ///
    /// # Safety
    /// `query` must behave as a PnP query-interface: on success it has filled the whole
    /// `KMCL_CLIENT_INTERFACE_V1` it was given (the `INTERFACE` header included) with the
    /// provider's functions and taken one reference for the caller, which this `Library` then
    /// owns; on failure it has written nothing the caller must release.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL (PnP queries are).
    pub unsafe fn query(
        query: impl FnOnce(sys::PINTERFACE, sys::USHORT, sys::USHORT, &sys::GUID) -> NtStatus,
    ) -> Result<Self, NtStatus> {
        let mut table = sys::KMCL_CLIENT_INTERFACE_V1::default();
        // 1 (the header's constant is an unsuffixed literal, so bindgen makes it a u32).
        let version = sys::USHORT::try_from(sys::KMCL_CLIENT_INTERFACE_VERSION_V1).unwrap_or(1);
        let header = ptr::from_mut(sys::interface_header_mut(&mut table));
        query(
            header,
            sys::KMCL_CLIENT_INTERFACE_V1_SIZE,
            version,
            &sys::KMCL_CLIENT_INTERFACE_TYPE,
        )
        .ok()?;
        let h = *sys::interface_header(&table);
        let api = Api {
            table,
            context: h.Context,
            reference: h.InterfaceReference,
            dereference: h.InterfaceDereference,
        };
        // From here on `library` owns the reference: an early return releases it.
        let library = Self { api };
        if h.Size != sys::KMCL_CLIENT_INTERFACE_V1_SIZE
            || u32::from(h.Version) != sys::KMCL_CLIENT_INTERFACE_VERSION_V1
            || h.InterfaceReference.is_none()
            || h.InterfaceDereference.is_none()
            || !complete(&library.api.table)
        {
            return Err(NtStatus::STATUS_NOT_SUPPORTED);
        }
        record_entries(&library.api.table)?;
        Ok(library)
    }

    /// The plain functions of `vmbkmcl.lib` as a table (`VmbChannelGetMmioSpace`, which has no
    /// plain declaration, left empty); no interface reference to take or release.
    ///
    /// Available with the `linked` feature (and in this crate's own unit tests, which link
    /// kmcl-model's definitions of the functions).
    #[cfg(any(feature = "linked", test))]
    #[must_use]
    pub fn linked() -> Self {
        let table = sys::KMCL_CLIENT_INTERFACE_V1 {
            __bindgen_padding_0: [0; 32],
            VmbChannelAllocate: Some(sys::VmbChannelAllocate),
            VmbChannelCleanup: Some(sys::VmbChannelCleanup),
            VmbChannelCreateGpadlFromBuffer: Some(sys::VmbChannelCreateGpadlFromBuffer),
            VmbChannelCreateGpadlFromMdl: Some(sys::VmbChannelCreateGpadlFromMdl),
            VmbChannelDeleteGpadl: Some(sys::VmbChannelDeleteGpadl),
            VmbChannelDisable: Some(sys::VmbChannelDisable),
            VmbChannelEnable: Some(sys::VmbChannelEnable),
            VmbChannelGetInterfaceInstance: Some(sys::VmbChannelGetInterfaceInstance),
            VmbChannelGetMmioSpace: None,
            VmbChannelGetPointer: Some(sys::VmbChannelGetPointer),
            VmbChannelInitSetClientContextSize: Some(sys::VmbChannelInitSetClientContextSize),
            VmbChannelInitSetFlags: Some(sys::VmbChannelInitSetFlags),
            VmbChannelInitSetFriendlyName: Some(sys::VmbChannelInitSetFriendlyName),
            VmbChannelInitSetMaximumExternalData: Some(sys::VmbChannelInitSetMaximumExternalData),
            VmbChannelInitSetMaximumPacketSize: Some(sys::VmbChannelInitSetMaximumPacketSize),
            VmbChannelInitSetProcessPacketCallbacks: Some(
                sys::VmbChannelInitSetProcessPacketCallbacks,
            ),
            VmbChannelInitSetStateChangeCallbacks: Some(sys::VmbChannelInitSetStateChangeCallbacks),
            VmbChannelPacketComplete: Some(sys::VmbChannelPacketComplete),
            VmbChannelPacketDeferToPassive: Some(sys::VmbChannelPacketDeferToPassive),
            VmbChannelPacketFail: Some(sys::VmbChannelPacketFail),
            VmbChannelPacketGetExternalData: Some(sys::VmbChannelPacketGetExternalData),
            VmbChannelPause: Some(sys::VmbChannelPause),
            VmbChannelSendSynchronousRequest: Some(sys::VmbChannelSendSynchronousRequest),
            VmbChannelSetIncomingProcessingAtPassive: Some(
                sys::VmbChannelSetIncomingProcessingAtPassive,
            ),
            VmbChannelSetInterruptLatency: Some(sys::VmbChannelSetInterruptLatency),
            VmbChannelSetPointer: Some(sys::VmbChannelSetPointer),
            VmbChannelSetTransactionQuota: Some(sys::VmbChannelSetTransactionQuota),
            VmbChannelSizeofPacket: Some(sys::VmbChannelSizeofPacket),
            VmbChannelStart: Some(sys::VmbChannelStart),
            VmbClientChannelInitSetRingBufferPageCount: Some(
                sys::VmbClientChannelInitSetRingBufferPageCount,
            ),
            VmbClientChannelInitSetTargetPnp: Some(sys::VmbClientChannelInitSetTargetPnp),
            VmbPacketAllocate: Some(sys::VmbPacketAllocate),
            VmbPacketFree: Some(sys::VmbPacketFree),
            VmbPacketGetChannel: Some(sys::VmbPacketGetChannel),
            VmbPacketGetPointer: Some(sys::VmbPacketGetPointer),
            VmbPacketInitialize: Some(sys::VmbPacketInitialize),
            VmbPacketSend: Some(sys::VmbPacketSend),
            VmbPacketSendWithExternalMdl: Some(sys::VmbPacketSendWithExternalMdl),
            VmbPacketSendWithExternalPfns: Some(sys::VmbPacketSendWithExternalPfns),
            VmbPacketSetCompletionRoutine: Some(sys::VmbPacketSetCompletionRoutine),
            VmbPacketSetPointer: Some(sys::VmbPacketSetPointer),
        };
        // Cannot fail for the linked functions unless a queried table of the same process
        // pointed elsewhere, which one vmbkmcl (or one kmcl-model) rules out; if it ever did,
        // the callbacks would still reach a matching set, so the result is ignored on purpose.
        let _ = record_entries(&table);
        Self {
            api: Api {
                table,
                context: ptr::null_mut(),
                reference: None,
                dereference: None,
            },
        }
    }

    /// Whether this library came from a query (it holds an interface reference) rather than
    /// from the linked functions.
    #[must_use]
    pub fn is_queried(&self) -> bool {
        self.api.dereference.is_some()
    }

    pub(crate) fn api(&self) -> &Api {
        &self.api
    }
}

impl Clone for Library {
    /// Takes another reference on the interface (`InterfaceReference`), which the clone
    /// releases when dropped.
    ///
    /// # IRQL
    /// PASSIVE_LEVEL (kmcl only clones where a channel is being built).
    fn clone(&self) -> Self {
        if let Some(reference) = self.api.reference {
            // SAFETY: `reference` and `context` are the provider's, from the query this library
            // (or the one it was cloned from) owns a reference of, which is still held (`self`
            // is alive); PnP allows taking more.
            unsafe { reference(self.api.context) };
        }
        Self { api: self.api }
    }
}

impl Drop for Library {
    /// Releases this library's reference (`InterfaceDereference`), exactly once.
    fn drop(&mut self) {
        if let Some(dereference) = self.api.dereference {
            // SAFETY: this value owns exactly one reference (from the query or from `clone`)
            // and this is the only place that releases it; nothing calls through this copy
            // of the table afterwards.
            unsafe { dereference(self.api.context) };
        }
    }
}
