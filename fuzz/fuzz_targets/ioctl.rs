//! cargo-fuzz target `ioctl`: see `vmbmsg_fuzz::ioctl`.
#![cfg_attr(fuzzing, no_main)]

vmbmsg_fuzz::fuzz_target!(|data: &[u8]| {
    vmbmsg_fuzz::ioctl::run(data);
});
