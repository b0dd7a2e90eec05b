//! cargo-fuzz target `driver`: see `vmbmsg_fuzz::driver`.
#![cfg_attr(fuzzing, no_main)]

vmbmsg_fuzz::fuzz_target!(|data: &[u8]| {
    vmbmsg_fuzz::driver::run(data);
});
