//! Build script of kmcl-sys.
//!
//! * On Windows it runs bindgen over the WDK's `km/vmbuskernelmodeclientlibapi.h`, preceded by
//!   the base and WDF headers that wdk-build lists for this driver's configuration, allowlisted
//!   to the client API (`bindgen_common.rs`) and reusing wdk-sys's types
//!   (reference/windows-drivers-rs.md §2.4). It then links vmbkmcl.lib unless the
//!   `suppress-vmbkmcl-linking` feature asks it not to (§2.5).
//! * Elsewhere there is no WDK: the crate uses `src/generated/portable.rs`, generated from
//!   `include/vmbkmcl_portable.h` by `cargo run -p kmcl-sys-gen` and committed. Nothing to do.

#[cfg(windows)]
include!("bindgen_common.rs");

#[cfg(windows)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use wdk_build::{ApiSubset, BuilderExt};

    println!("cargo::rerun-if-changed=bindgen_common.rs");
    println!("cargo::rerun-if-env-changed=CARGO_FEATURE_SUPPRESS_VMBKMCL_LINKING");

    let config = wdk_build::Config::from_env_auto()?;
    let mut header = config.bindgen_header_contents([ApiSubset::Base, ApiSubset::Wdf])?;
    header.push_str("#include \"vmbuskernelmodeclientlibapi.h\"\n");

    let builder = bindgen::Builder::wdk_default(&config)?
        .header_contents("vmbkmcl-input.h", &header)
        .allowlist_file("(?i).*vmbuskernelmodeclientlibapi.*")
        // Types the header borrows from wdm.h/wdf.h (PMDL, GUID, NTSTATUS, ...) come from
        // wdk-sys, which lib.rs glob-imports into the bindings module.
        .allowlist_recursively(false);
    let bindings = kmcl_allowlist(builder).generate()?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("vmbkmcl.rs");
    bindings.write_to_file(&out)?;

    if std::env::var_os("CARGO_FEATURE_SUPPRESS_VMBKMCL_LINKING").is_none() {
        // Search paths for Lib/<sdk>/km/<arch> come from wdk-build; check that the import
        // library is there so a missing WDK component fails here, with a clear message.
        let found = config
            .library_paths()?
            .any(|dir| dir.join("vmbkmcl.lib").is_file());
        if !found {
            return Err(
                "vmbkmcl.lib was not found in the WDK library paths that wdk-build \
                        reports (Lib/<sdk>/km/<arch>); install the WDK matching the SDK"
                    .into(),
            );
        }
        for dir in config.library_paths()? {
            println!("cargo::rustc-link-search={}", dir.display());
        }
        println!("cargo::rustc-link-lib=static=vmbkmcl");
    }
    Ok(())
}

#[cfg(not(windows))]
fn main() {
    println!("cargo::rerun-if-changed=build.rs");
}
