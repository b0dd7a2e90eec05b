//! cargo-fuzz target `proto`: see `vmbmsg_fuzz::proto`.
#![cfg_attr(fuzzing, no_main)]

vmbmsg_fuzz::fuzz_target!(|data: &[u8]| {
    vmbmsg_fuzz::proto::run(data);
});
