//! Build script of kmcl-sys.
//!
//! * On Windows it runs bindgen over the WDK's `km/vmbuskernelmodeclientlibapi.h`, preceded by
//!   the base and WDF headers that wdk-build lists for this driver's configuration, allowlisted
//!   to exactly the client API (`bindgen_common.rs`) and reusing wdk-sys's
//!   types (reference/windows-drivers-rs.md §2.4). With the `link` feature it also links
//!   `vmbkmcl.lib`, the way wdk-build links every kernel import library (`static`, `-bundle`:
//!   the import library is passed to the final link of the driver instead of being copied into
//!   this crate's rlib).
//! * Elsewhere there is no WDK: the crate uses `src/generated/portable.rs`, generated from
//!   `include/vmbkmcl_portable.h` by `cargo run -p kmcl-sys-gen` and committed. Nothing to do.

#[cfg(windows)]
include!("bindgen_common.rs");

#[cfg(windows)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use wdk_build::{ApiSubset, BuilderExt};

    const HEADER: &str = "vmbuskernelmodeclientlibapi.h";
    println!("cargo::rerun-if-changed=bindgen_common.rs");
    println!("cargo::rerun-if-env-changed=CARGO_FEATURE_LINK");

    let config = wdk_build::Config::from_env_auto()?;
    let mut header = config.bindgen_header_contents([ApiSubset::Base, ApiSubset::Wdf])?;
    header.push_str(&format!("#include \"{HEADER}\"\n"));

    // The header's text, for the DEFINE_GUID values bindgen does not evaluate. The same search
    // path as the #include above: the first include directory that has the file.
    let dirs: Vec<std::path::PathBuf> = config.include_paths()?.collect();
    let path = dirs
        .iter()
        .map(|dir| dir.join(HEADER))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "{HEADER} was not found in the WDK include directories that wdk-build reports \
                 ({}); install the Windows Driver Kit whose version matches the SDK",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    println!("cargo::rerun-if-changed={}", path.display());
    let guids = guid_constants(&std::fs::read_to_string(&path)?)
        .map_err(|e| format!("{}: {e}", path.display()))?;

    let builder = bindgen::Builder::wdk_default(&config)?
        .header_contents("vmbkmcl-input.h", &header)
        // Types the header borrows from wdm.h/wdf.h (PMDL, GUID, INTERFACE, NTSTATUS, ...) come
        // from wdk-sys, which lib.rs glob-imports into the bindings module.
        .allowlist_recursively(false)
        .raw_line(guids);
    let bindings = kmcl_allowlist(builder).generate()?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("vmbkmcl.rs");
    bindings.write_to_file(&out)?;

    if std::env::var_os("CARGO_FEATURE_LINK").is_some() {
        // Search paths for Lib/<sdk>/km/<arch> come from wdk-build; check that the import
        // library is there so a WDK without it fails here, with a clear message, and not in
        // the driver's final link.
        let lib_dirs: Vec<std::path::PathBuf> = config.library_paths()?.collect();
        if !lib_dirs.iter().any(|dir| dir.join("vmbkmcl.lib").is_file()) {
            return Err(format!(
                "the `link` feature of kmcl-sys (the driver's `linked-kmcl` feature) links \
                 vmbkmcl.lib, but it is in none of the WDK library directories that wdk-build \
                 reports: {}. Either install a WDK that ships km\\<arch>\\vmbkmcl.lib, or build \
                 without the feature: the default reaches KMCL through the \
                 KMCL_CLIENT_INTERFACE_V1 table the VMBus bus driver hands out, which needs no \
                 import library (docs/build-windows.md)",
                lib_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
            .into());
        }
        for dir in &lib_dirs {
            println!("cargo::rustc-link-search={}", dir.display());
        }
        println!("cargo::rustc-link-lib=static:-bundle=vmbkmcl");
    }
    Ok(())
}

#[cfg(not(windows))]
fn main() {
    println!("cargo::rerun-if-changed=build.rs");
}
