//! The INF template against the driver's build settings and security rules: what a first
//! install depends on and no Linux test otherwise sees.
//!
//! * The supported-OS floor of `[Manufacturer]`, the KMDF version the INF asks for
//!   (`KmdfLibraryVersion`) and the minimum KMDF version the driver is built for (Cargo.toml
//!   `minimum-kmdf-version-minor`) must name the same Windows release: a driver built for KMDF
//!   1.33 only, behind an INF that installs on Windows 10 1709, fails to load (Code 10) on every
//!   guest older than Windows 11 / Server 2022.
//! * The stack is secured from the INF (SYSTEM and Administrators only, FILE_DEVICE_SECURE_OPEN),
//!   and the driver names no device object and assigns no SDDL of its own.

use std::path::Path;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The Windows build each KMDF minor version first shipped in (learn.microsoft.com, "KMDF
/// version history"); 1.25 is the first a driver can name as its minimum.
fn first_build(kmdf_minor: u32) -> Option<u32> {
    match kmdf_minor {
        25 => Some(17134), // Windows 10 1803
        27 => Some(17763), // Windows 10 1809, Windows Server 2019
        29 => Some(18362), // Windows 10 1903
        31 => Some(19041), // Windows 10 2004
        33 => Some(22000), // Windows 11 21H2 (Windows Server 2022: 20348)
        _ => None,
    }
}

/// `key = value` in `[workspace.metadata.wdk.driver-model]` of the root manifest.
fn driver_model(key: &str) -> u32 {
    let manifest = read("Cargo.toml");
    let section = manifest
        .split("[workspace.metadata.wdk.driver-model]")
        .nth(1)
        .expect("the driver-model section");
    let section = section.split("\n[").next().unwrap_or(section);
    section
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').parse().ok())?
        })
        .unwrap_or_else(|| panic!("{key} in [workspace.metadata.wdk.driver-model]"))
}

/// The INF lines without their comments (a `;` outside double quotes starts one), trimmed.
fn inf_lines() -> Vec<String> {
    read("inf/vmbmsg.inx")
        .lines()
        .map(|l| {
            let mut quoted = false;
            let end = l
                .char_indices()
                .find(|&(_, c)| {
                    if c == '"' {
                        quoted = !quoted;
                    }
                    c == ';' && !quoted
                })
                .map_or(l.len(), |(i, _)| i);
            l[..end].trim().to_owned()
        })
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn the_inf_floor_and_kmdf_version_match_the_minimum_the_driver_is_built_for() {
    assert_eq!(driver_model("kmdf-version-major"), 1);
    let target = driver_model("target-kmdf-version-minor");
    let minimum = driver_model("minimum-kmdf-version-minor");
    assert!(
        (25..=target).contains(&minimum),
        "KMDF minimum 1.{minimum} must be within 1.25..=1.{target}"
    );
    let floor = first_build(minimum).expect("a KMDF minor version with a known first build");
    let lines = inf_lines();
    let decoration = format!("NT$ARCH$.10.0...{floor}");
    let manufacturer = lines
        .iter()
        .find(|l| l.starts_with("%ManufacturerName%"))
        .expect("[Manufacturer] line");
    assert!(
        manufacturer.ends_with(&decoration),
        "[Manufacturer] must target {decoration} (KMDF 1.{minimum}): {manufacturer}"
    );
    assert!(
        lines.iter().any(|l| *l == format!("[VmbMsg.{decoration}]")),
        "the models section must be [VmbMsg.{decoration}]"
    );
    assert!(
        lines
            .iter()
            .any(|l| *l == format!("KmdfLibraryVersion = 1.{minimum}")),
        "KmdfLibraryVersion must be 1.{minimum}"
    );
    // No decoration for another build anywhere.
    for l in &lines {
        if let Some(i) = l.find("NT$ARCH$.10.0...") {
            assert!(l[i..].starts_with(&decoration), "stray decoration in {l}");
        }
    }
}

#[test]
fn the_inf_secures_the_stack_for_system_and_administrators_only() {
    let lines = inf_lines();
    assert!(
        lines
            .iter()
            .any(|l| l == r#"HKR,,Security,,"D:P(A;;GA;;;SY)(A;;GA;;;BA)""#),
        "Security: SYSTEM and Administrators only"
    );
    // FILE_DEVICE_SECURE_OPEN as a REG_DWORD (FLG_ADDREG_TYPE_DWORD = 0x10001).
    assert!(
        lines
            .iter()
            .any(|l| l == "HKR,,DeviceCharacteristics,0x10001,0x100"),
        "DeviceCharacteristics: FILE_DEVICE_SECURE_OPEN"
    );
    assert!(
        lines.iter().any(|l| l == "AddReg = VmbMsg_Security_AddReg"),
        "the security AddReg is applied from the .HW section"
    );
}

#[test]
fn the_driver_names_no_device_object_and_assigns_no_sddl() {
    let device = read("src/wdf/device.rs");
    let code: String = device
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    for forbidden in [
        "WdfDeviceInitAssignName",
        "WdfDeviceInitAssignSDDLString",
        "FILE_AUTOGENERATED_DEVICE_NAME",
        "WdfDeviceInitSetCharacteristics",
    ] {
        assert!(
            !code.contains(forbidden),
            "src/wdf/device.rs calls {forbidden}: the FDO must stay unnamed and be secured by the INF"
        );
    }
}
