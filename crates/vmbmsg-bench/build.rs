//! Builds the C receive path (c/rx_path.c) with the system C compiler at -O2, against the
//! portable KMCL header that kmcl-sys binds; its `Vmb*` calls resolve to kmcl-model. Nothing
//! to build for Windows targets (the harness is Linux-only).

fn main() {
    println!("cargo:rerun-if-changed=c/rx_path.c");
    println!("cargo:rerun-if-changed=../kmcl-sys/include/vmbkmcl_portable.h");
    if std::env::var("CARGO_CFG_WINDOWS").is_ok() {
        return;
    }
    cc::Build::new()
        .file("c/rx_path.c")
        .include("../kmcl-sys/include")
        .opt_level(2)
        .flag_if_supported("-std=c11")
        // The header's KMCL_CLIENT_INTERFACE_V1 begins with an unnamed `INTERFACE` member, as
        // the WDK's does (a Microsoft extension, also what kmcl-sys-gen passes to clang).
        .flag_if_supported("-fms-extensions")
        .warnings(true)
        .extra_warnings(true)
        .compile("rx_path");
}
