//! GPADLs: creation from a buffer or an MDL, deletion, and the host's view of their bytes.

use super::*;

impl World {
    pub(crate) fn gpadl_create(
        &self,
        func: &'static str,
        serial: u64,
        h: usize,
        flags: u32,
        bytes: Result<Vec<u8>, NtStatus>,
    ) -> Result<u32, NtStatus> {
        if !self.require_passive(func, h) {
            return Err(NtStatus::STATUS_INVALID_DEVICE_STATE);
        }
        let mut g = self.lock();
        let c = g
            .channel(func, serial, h)
            .ok_or(NtStatus::STATUS_INVALID_PARAMETER_1)?;
        let phase = c.phase;
        if flags & !sys::VMBUS_CHANNEL_GPADL_FLAGS != 0 {
            return Err(NtStatus::STATUS_INVALID_PARAMETER_2);
        }
        let bytes = bytes?;
        if !phase.is_open() {
            g.record(
                V::GpadlOnClosedChannel,
                func,
                h,
                format!("channel is {phase:?}; create GPADLs from EvtChannelOpened on"),
            );
            return Err(NtStatus::STATUS_INVALID_DEVICE_STATE);
        }
        let id = g.next_gpadl;
        if id == u32::MAX {
            return Err(NtStatus::STATUS_INSUFFICIENT_RESOURCES);
        }
        g.next_gpadl += 1;
        g.gpadls.insert(
            id,
            Gpadl {
                channel: serial,
                bytes,
                leak_reported: false,
            },
        );
        Ok(id)
    }

    pub(crate) fn gpadl_delete(&self, serial: u64, h: usize, id: u32) {
        const F: &str = "VmbChannelDeleteGpadl";
        if !self.require_passive(F, h) {
            return;
        }
        let mut g = self.lock();
        if g.channel(F, serial, h).is_none() {
            return;
        }
        match g.gpadls.get(&id) {
            Some(gp) if gp.channel == serial => {
                g.gpadls.remove(&id);
                g.deleted_gpadls.insert(id);
            }
            _ if g.deleted_gpadls.contains(&id) => {
                g.record(
                    V::GpadlDeletedTwice,
                    F,
                    h,
                    format!("GPADL {id} was already deleted"),
                );
            }
            _ => {
                g.record(
                    V::UnknownGpadl,
                    F,
                    h,
                    format!("no GPADL {id} on this channel"),
                );
            }
        }
    }

    pub(crate) fn gpadl_bytes(&self, id: u32) -> Option<Vec<u8>> {
        self.lock().gpadls.get(&id).map(|g| g.bytes.clone())
    }
}
