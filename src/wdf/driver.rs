//! `DriverEntry` and `EvtDriverDeviceAdd`.

use wdk::paged_code;
use wdk_sys::{
    NTSTATUS, PCUNICODE_STRING, PDRIVER_OBJECT, PWDFDEVICE_INIT, WDF_DRIVER_CONFIG, WDF_NO_HANDLE,
    WDF_NO_OBJECT_ATTRIBUTES, WDFDRIVER, call_unsafe_wdf_function_binding,
};

use super::{device, wdf_size};

/// The driver's entry point, called by the framework's `FxDriverEntry` (the linker entry point
/// that wdk-build sets with `/ENTRY:FxDriverEntry`, reference §1.8) once the framework library
/// is bound. Registers the driver with the framework; everything else happens per device, in
/// [`evt_driver_device_add`].
///
/// # IRQL
/// PASSIVE_LEVEL, once, in the system thread that loads the driver. Lives in the discardable
/// `INIT` section: nothing calls it after it returns.
///
/// # Safety
/// Only the I/O manager calls it (through `FxDriverEntry`), with the driver object it created
/// for this image and the path of the driver's service key.
// SAFETY: `DriverEntry` is the symbol `FxDriverEntry` (WdfDriverEntry.lib) calls; nothing else in
// this crate exports that name, and the driver image links no other `DriverEntry`.
#[unsafe(export_name = "DriverEntry")]
// SAFETY: `INIT` is discarded after initialisation; this function runs only before that and is
// not referenced afterwards (only `FxDriverEntry` calls it, once).
#[unsafe(link_section = "INIT")]
unsafe extern "system" fn driver_entry(
    driver: PDRIVER_OBJECT,
    registry_path: PCUNICODE_STRING,
) -> NTSTATUS {
    // `WDF_DRIVER_CONFIG_INIT(&config, evt_driver_device_add)`: zero, `Size`, the device-add
    // callback (wdfdriver.h). No `EvtDriverUnload`: a PnP driver needs none, the framework
    // unloads it.
    let mut config = WDF_DRIVER_CONFIG {
        Size: const { wdf_size::<WDF_DRIVER_CONFIG>() },
        EvtDriverDeviceAdd: Some(evt_driver_device_add),
        ..WDF_DRIVER_CONFIG::default()
    };
    // SAFETY: `driver` and `registry_path` are the arguments the I/O manager passed to this
    // entry point, unchanged; no attributes is allowed (`_In_opt_`); `config` is a valid
    // `WDF_DRIVER_CONFIG` with its `Size` set, and it is read during the call only; the
    // `WDFDRIVER*` out-parameter is optional (`_Out_opt_`, passed as `WDF_NO_HANDLE`, as in the
    // echo sample). PASSIVE_LEVEL, as the call requires.
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDriverCreate,
            driver,
            registry_path,
            WDF_NO_OBJECT_ATTRIBUTES,
            &raw mut config,
            WDF_NO_HANDLE.cast::<WDFDRIVER>(),
        )
    }
}

/// `EvtDriverDeviceAdd`: the PnP manager found a VMBus device with our hardware id (the
/// host's offer of a vmbmsg channel). Creates the device, its queues and its interface.
///
/// # IRQL
/// PASSIVE_LEVEL, so it is pageable.
///
/// # Safety
/// Only the framework calls it, with a `device_init` it allocated for this call.
#[unsafe(link_section = "PAGE")]
unsafe extern "C" fn evt_driver_device_add(
    _driver: WDFDRIVER,
    device_init: PWDFDEVICE_INIT,
) -> NTSTATUS {
    paged_code!();
    // SAFETY: `device_init` is the framework's, for this call only, and not yet consumed by
    // `WdfDeviceCreate`; this is EvtDriverDeviceAdd at PASSIVE_LEVEL (`device::create`'s
    // contract).
    let status = unsafe { device::create(device_init) };
    status.0
}
