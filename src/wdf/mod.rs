//! The KMDF shell (Windows only): DriverEntry, device add, PnP/power callbacks, queues and
//! request completion. Thin: every callback translates WDF types and calls the portable
//! [`Core`](crate::Core).
