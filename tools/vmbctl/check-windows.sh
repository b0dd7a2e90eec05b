#!/usr/bin/env bash
# Type-checks and lints vmbctl's Windows build on Linux.
#
# The Windows backend (src/device/windows.rs) is never compiled by Linux CI. windows-sys
# compiles on any host, so this copies the crate into a scratch package, shims the three
# `std::os::windows::io` items it uses (same signatures), and runs clippy with `--cfg windows`
# on that package only, with the workspace lints and the versions of its Cargo.lock
# (windows-sys 0.61.2; --offline: the crates are already in the local registry cache).
# What it cannot check: linking, and behaviour on Windows.
#
# Usage: tools/vmbctl/check-windows.sh   (from anywhere; needs only the Rust toolchain)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
scratch="$root/target/vmbctl-windows-check"
rm -rf "$scratch/pkg"
mkdir -p "$scratch/pkg"
cp -r "$here/src" "$here/tests" "$scratch/pkg/"
cp "$root/Cargo.lock" "$scratch/pkg/"

sed -i 's/use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};/use crate::shim::{AsRawHandle, FromRawHandle, OwnedHandle};/' \
    "$scratch/pkg/src/device/windows.rs"
cat >> "$scratch/pkg/src/lib.rs" <<'RS'

/// `std::os::windows::io`'s handle types, same signatures (`RawHandle` is `*mut c_void`).
#[expect(unsafe_code, clippy::undocumented_unsafe_blocks, reason = "shim")]
mod shim {
    pub type RawHandle = *mut core::ffi::c_void;
    #[derive(Debug)]
    pub struct OwnedHandle(RawHandle);
    pub trait AsRawHandle {
        fn as_raw_handle(&self) -> RawHandle;
    }
    pub trait FromRawHandle {
        /// # Safety
        /// As std's.
        unsafe fn from_raw_handle(h: RawHandle) -> Self;
    }
    impl AsRawHandle for OwnedHandle {
        fn as_raw_handle(&self) -> RawHandle {
            self.0
        }
    }
    impl FromRawHandle for OwnedHandle {
        unsafe fn from_raw_handle(h: RawHandle) -> Self {
            Self(h)
        }
    }
    unsafe impl Send for OwnedHandle {}
    unsafe impl Sync for OwnedHandle {}
}
RS

# The vmbctl manifest with the Windows dependencies made unconditional (cargo resolves target
# tables for the Linux host) and without the simulation's `vmbmsg`; the workspace lints inline.
python3 - "$here/Cargo.toml" "$root" "$scratch/pkg/Cargo.toml" <<'PY'
import re, sys
tool_path, root, out = sys.argv[1:]
ws = open(root + '/Cargo.toml').read()
lines = []
for line in open(tool_path).read().splitlines():
    if re.fullmatch(r'([\w-]+\.)?workspace = true', line) or line == '[lints]':
        continue  # package fields and lints come from the workspace: given below instead
    if line.startswith("[target.'cfg("):
        continue  # the windows-sys entry joins [dependencies]; vmbmsg is dropped below
    if line.startswith('vmbmsg = '):
        continue
    if line == '[package]':
        line += '\nversion = "0.0.0"\nedition = "2024"\npublish = false'
    lines.append(line.replace('path = "../../', 'path = "' + root + '/'))
lints = re.search(r'\[workspace\.lints\.rust\]\n(.*?)\n\[workspace\.lints\.clippy\]\n(.*?)\n\n', ws, re.S)
lines += ['', '[workspace]', '', '[lints.rust]', lints.group(1),
          'explicit_builtin_cfgs_in_flags = "allow"', '', '[lints.clippy]', lints.group(2)]
open(out, 'w').write('\n'.join(lines) + '\n')
PY

cd "$scratch/pkg"
CARGO_TARGET_DIR="$scratch/target" cargo clippy --offline --all-targets -- --cfg windows -D warnings
echo "vmbctl: the Windows build type-checks and is clippy-clean (not linked, not run)"
