//! Build script of the driver package.
//!
//! On Windows it configures the KMDF binary build through wdk-build (linker arguments, library
//! search paths, the crt-static check). Everywhere else the package is only the portable core,
//! and there is nothing to configure.

#[cfg(windows)]
fn main() -> Result<(), wdk_build::ConfigError> {
    wdk_build::configure_wdk_binary_build()
}

#[cfg(not(windows))]
fn main() {}
