//! `rx_callgrind <rust|c|null> <payload bytes> <packets>`: delivers that many ECHO packets on
//! this thread, for `valgrind --tool=callgrind --toggle-collect=<the guest's callback>`
//! (perf-report runs it twice with different packet counts and divides the difference).
#![cfg_attr(windows, no_main)] // Linux only: the harness runs against kmcl-model
#![cfg(not(windows))]

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().all(|a| a == "--bench") {
        // Run by a plain `cargo bench`: nothing to measure without callgrind around it.
        return std::process::ExitCode::SUCCESS;
    }
    let parsed = match args.as_slice() {
        [g, s, n] => vmbmsg_bench::Guest::from_name(g)
            .zip(s.parse::<usize>().ok())
            .zip(n.parse::<u64>().ok()),
        _ => None,
    };
    let Some(((guest, size), n)) = parsed else {
        eprintln!("usage: rx_callgrind <rust|c|null> <payload bytes> <packets>");
        return std::process::ExitCode::from(2);
    };
    let world = vmbmsg_bench::RxWorld::new(guest);
    let message = vmbmsg_bench::echo_message(size);
    let mut replied = 0u64;
    for _ in 0..n {
        replied += u64::from(world.deliver(&message).len() == message.len());
    }
    println!("{} {size} {n} replies={replied}", guest.name());
    std::process::ExitCode::SUCCESS
}
