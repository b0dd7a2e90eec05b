//! The writers: every message and reply into a caller's buffer.

use super::*;

fn payload_len_u32(len: usize) -> Result<u32, ProtoError> {
    if len > MAX_PAYLOAD {
        return Err(ProtoError::PayloadTooLarge {
            len,
            max: MAX_PAYLOAD,
        });
    }
    u32::try_from(len).map_err(|_| ProtoError::PayloadTooLarge {
        len,
        max: MAX_PAYLOAD,
    })
}

/// Writes `header` (with `payload_len` set from `body`) and `body`; returns the length.
fn write_frame(buf: &mut [u8], header: MessageHeader, body: &[u8]) -> Result<usize, ProtoError> {
    write_frame_bytes(buf, header, body).map(<[u8]>::len)
}

/// [`write_frame`], returning the bytes written (the front of `buf`).
#[inline(always)]
fn write_frame_bytes<'b>(
    buf: &'b mut [u8],
    mut header: MessageHeader,
    body: &[u8],
) -> Result<&'b [u8], ProtoError> {
    header.payload_len = U32::new(payload_len_u32(body.len())?);
    let total = HEADER_SIZE + body.len();
    let got = buf.len();
    let out = buf
        .get_mut(..total)
        .ok_or(ProtoError::BufferTooSmall { needed: total, got })?;
    let (head, tail) = out
        .split_at_mut_checked(HEADER_SIZE)
        .ok_or(ProtoError::BufferTooSmall { needed: total, got })?;
    // The header as its three little-endian words (three stores where the compiler would
    // otherwise store field by field).
    let words = [
        u64::from(header.version.get())
            | (u64::from(header.kind.get()) << 32)
            | (u64::from(header.flags.get()) << 48),
        u64::from(header.payload_len.get())
            | (u64::from(header.status.get().cast_unsigned()) << 32),
        header.id.get(),
    ];
    for (word, bytes) in words.iter().zip(head.chunks_exact_mut(8)) {
        bytes.copy_from_slice(&word.to_le_bytes());
    }
    tail.copy_from_slice(body);
    Ok(out)
}

fn header(
    version: u32,
    kind: MessageKind,
    flags: MessageFlags,
    status: NtStatus,
    id: u64,
) -> MessageHeader {
    MessageHeader {
        version: U32::new(version),
        kind,
        flags,
        payload_len: U32::ZERO,
        status: I32::new(status.0),
        id: U64::new(id),
    }
}

/// The header of a request (`kind` in `version`, no flags, status 0), if `kind` exists in a
/// `version` this crate speaks.
fn request_header(kind: MessageKind, version: u32, id: u64) -> Result<MessageHeader, ProtoError> {
    check_write_version(kind, version)?;
    Ok(header(
        version,
        kind,
        MessageFlags::NONE,
        NtStatus::STATUS_SUCCESS,
        id,
    ))
}

fn check_write_version(kind: MessageKind, version: u32) -> Result<(), ProtoError> {
    if !is_supported_version(version) {
        return Err(ProtoError::UnsupportedVersion(version));
    }
    check_kind_version(kind, version)
}

impl HostMessage<'_> {
    /// An ECHO request.
    #[must_use]
    pub const fn echo(version: u32, id: u64, payload: &[u8]) -> HostMessage<'_> {
        HostMessage {
            version,
            id,
            body: HostBody::Echo { payload },
        }
    }

    /// A NOTIFY request.
    #[must_use]
    pub const fn notify(version: u32, id: u64, payload: &[u8]) -> HostMessage<'_> {
        HostMessage {
            version,
            id,
            body: HostBody::Notify { payload },
        }
    }

    /// An ECHO_BULK request (1.1) for the `len` bytes at `offset` of the host's half.
    #[must_use]
    pub const fn echo_bulk(version: u32, id: u64, offset: u32, len: u32) -> HostMessage<'static> {
        HostMessage {
            version,
            id,
            body: HostBody::EchoBulk { offset, len },
        }
    }

    /// The message kind.
    #[must_use]
    pub const fn kind(&self) -> MessageKind {
        match self.body {
            HostBody::Echo { .. } => MessageKind::ECHO,
            HostBody::Notify { .. } => MessageKind::NOTIFY,
            HostBody::EchoBulk { .. } => MessageKind::ECHO_BULK,
        }
    }

    /// The encoded size.
    #[must_use]
    pub const fn encoded_len(&self) -> usize {
        match self.body {
            HostBody::Echo { payload } | HostBody::Notify { payload } => {
                HEADER_SIZE + payload.len()
            }
            HostBody::EchoBulk { .. } => BULK_REF_SIZE,
        }
    }

    /// Writes the message to the front of `buf`; returns the bytes written. The output always
    /// parses back with [`parse_host_message`] to `self`.
    ///
    /// # Errors
    /// [`ProtoError::BufferTooSmall`], [`ProtoError::PayloadTooLarge`],
    /// [`ProtoError::UnsupportedVersion`], [`ProtoError::UnknownKind`] (a 1.1 kind in a 1.0
    /// message), [`ProtoError::BadBulkReference`].
    pub fn write(&self, buf: &mut [u8]) -> Result<usize, ProtoError> {
        let h = request_header(self.kind(), self.version, self.id)?;
        match self.body {
            HostBody::Echo { payload } | HostBody::Notify { payload } => {
                write_frame(buf, h, payload)
            }
            HostBody::EchoBulk { offset, len } => {
                write_frame(buf, h, bulk_ref_body(offset, len)?.as_bytes())
            }
        }
    }
}

impl GuestMessage<'_> {
    /// A NEGOTIATE request proposing `min_version..=max_version` (header version
    /// [`NEGOTIATE_HEADER_VERSION`]).
    #[must_use]
    pub const fn negotiate(id: u64, min_version: u32, max_version: u32) -> GuestMessage<'static> {
        GuestMessage {
            version: NEGOTIATE_HEADER_VERSION,
            id,
            body: GuestBody::Negotiate {
                min_version,
                max_version,
            },
        }
    }

    /// A SEND request.
    #[must_use]
    pub const fn send(version: u32, id: u64, payload: &[u8]) -> GuestMessage<'_> {
        GuestMessage {
            version,
            id,
            body: GuestBody::Send { payload },
        }
    }

    /// A PING request.
    #[must_use]
    pub const fn ping(version: u32, id: u64, nonce: u64) -> GuestMessage<'static> {
        GuestMessage {
            version,
            id,
            body: GuestBody::Ping { nonce },
        }
    }

    /// A BULK_OFFER request (1.1): the GPADL `gpadl` of `guest_to_host_len +
    /// host_to_guest_len` bytes.
    #[must_use]
    pub const fn bulk_offer(
        version: u32,
        id: u64,
        gpadl: u32,
        guest_to_host_len: u32,
        host_to_guest_len: u32,
    ) -> GuestMessage<'static> {
        GuestMessage {
            version,
            id,
            body: GuestBody::BulkOffer {
                gpadl,
                guest_to_host_len,
                host_to_guest_len,
            },
        }
    }

    /// A SEND_BULK request (1.1) for the `len` bytes at `offset` of the guest's half.
    #[must_use]
    pub const fn send_bulk(version: u32, id: u64, offset: u32, len: u32) -> GuestMessage<'static> {
        GuestMessage {
            version,
            id,
            body: GuestBody::SendBulk { offset, len },
        }
    }

    /// The message kind.
    #[must_use]
    pub const fn kind(&self) -> MessageKind {
        match self.body {
            GuestBody::Negotiate { .. } => MessageKind::NEGOTIATE,
            GuestBody::Send { .. } => MessageKind::SEND,
            GuestBody::Ping { .. } => MessageKind::PING,
            GuestBody::BulkOffer { .. } => MessageKind::BULK_OFFER,
            GuestBody::SendBulk { .. } => MessageKind::SEND_BULK,
        }
    }

    /// The encoded size.
    #[must_use]
    pub const fn encoded_len(&self) -> usize {
        match self.body {
            GuestBody::Negotiate { .. } => NEGOTIATE_REQUEST_SIZE,
            GuestBody::Send { payload } => HEADER_SIZE + payload.len(),
            GuestBody::Ping { .. } => PING_SIZE,
            GuestBody::BulkOffer { .. } => BULK_OFFER_SIZE,
            GuestBody::SendBulk { .. } => BULK_REF_SIZE,
        }
    }

    /// Writes the message to the front of `buf`; returns the bytes written. The output always
    /// parses back with [`parse_guest_message`] to `self`.
    ///
    /// # Errors
    /// [`ProtoError::BufferTooSmall`], [`ProtoError::PayloadTooLarge`],
    /// [`ProtoError::UnsupportedVersion`], [`ProtoError::InvalidVersionRange`],
    /// [`ProtoError::UnknownKind`] (a 1.1 kind in a 1.0 message),
    /// [`ProtoError::BadBulkReference`].
    pub fn write(&self, buf: &mut [u8]) -> Result<usize, ProtoError> {
        let h = request_header(self.kind(), self.version, self.id)?;
        match self.body {
            GuestBody::Negotiate {
                min_version,
                max_version,
            } => {
                check_range(min_version, max_version)?;
                let body = NegotiateRequest {
                    min_version: U32::new(min_version),
                    max_version: U32::new(max_version),
                };
                write_frame(buf, h, body.as_bytes())
            }
            GuestBody::Send { payload } => write_frame(buf, h, payload),
            GuestBody::Ping { nonce } => {
                let body = PingBody {
                    nonce: U64::new(nonce),
                };
                write_frame(buf, h, body.as_bytes())
            }
            GuestBody::BulkOffer {
                gpadl,
                guest_to_host_len,
                host_to_guest_len,
            } => {
                if guest_to_host_len == 0
                    || host_to_guest_len == 0
                    || guest_to_host_len.checked_add(host_to_guest_len).is_none()
                {
                    return Err(ProtoError::BadBulkReference {
                        offset: guest_to_host_len,
                        len: host_to_guest_len,
                    });
                }
                let body = BulkOffer {
                    gpadl: U32::new(gpadl),
                    guest_to_host_len: U32::new(guest_to_host_len),
                    host_to_guest_len: U32::new(host_to_guest_len),
                    reserved: U32::ZERO,
                };
                write_frame(buf, h, body.as_bytes())
            }
            GuestBody::SendBulk { offset, len } => {
                write_frame(buf, h, bulk_ref_body(offset, len)?.as_bytes())
            }
        }
    }
}

/// A [`BulkRef`] the parsers accept (see `bulk_ref`).
fn bulk_ref_body(offset: u32, len: u32) -> Result<BulkRef, ProtoError> {
    if len == 0 || to_usize(len) > MAX_BULK_PAYLOAD || offset.checked_add(len).is_none() {
        return Err(ProtoError::BadBulkReference { offset, len });
    }
    Ok(BulkRef {
        offset: U32::new(offset),
        len: U32::new(len),
    })
}

impl<'a> Reply<'a> {
    /// The host accepts a NEGOTIATE with `version`.
    #[must_use]
    pub const fn negotiate_accept(id: u64, version: u32) -> Reply<'static> {
        Reply {
            kind: MessageKind::NEGOTIATE,
            version: NEGOTIATE_HEADER_VERSION,
            id,
            status: NtStatus::STATUS_SUCCESS,
            body: ReplyBody::Negotiate { version },
        }
    }

    /// The host rejects a NEGOTIATE with [`NEGOTIATE_REJECT_STATUS`].
    #[must_use]
    pub const fn negotiate_reject(id: u64) -> Reply<'static> {
        Self::status_only(
            MessageKind::NEGOTIATE,
            NEGOTIATE_HEADER_VERSION,
            id,
            NEGOTIATE_REJECT_STATUS,
        )
    }

    /// A successful PING reply.
    #[must_use]
    pub const fn ping(version: u32, id: u64, nonce: u64) -> Reply<'static> {
        Reply {
            kind: MessageKind::PING,
            version,
            id,
            status: NtStatus::STATUS_SUCCESS,
            body: ReplyBody::Ping { nonce },
        }
    }

    /// A successful ECHO reply carrying `payload` (the request's).
    #[must_use]
    pub const fn echo(version: u32, id: u64, payload: &'a [u8]) -> Self {
        Reply {
            kind: MessageKind::ECHO,
            version,
            id,
            status: NtStatus::STATUS_SUCCESS,
            body: ReplyBody::Echo { payload },
        }
    }

    /// A successful ECHO_BULK reply (1.1): the echo lies where the request's payload was.
    #[must_use]
    pub const fn echo_bulk(version: u32, id: u64, offset: u32, len: u32) -> Reply<'static> {
        Reply {
            kind: MessageKind::ECHO_BULK,
            version,
            id,
            status: NtStatus::STATUS_SUCCESS,
            body: ReplyBody::EchoBulk { offset, len },
        }
    }

    /// A reply without a body: any failure, or a SEND / NOTIFY / BULK_OFFER / SEND_BULK
    /// success.
    #[must_use]
    pub const fn status_only(
        kind: MessageKind,
        version: u32,
        id: u64,
        status: NtStatus,
    ) -> Reply<'static> {
        Reply {
            kind,
            version,
            id,
            status,
            body: ReplyBody::Empty,
        }
    }

    /// The failure reply to a request that did not parse: echoes the raw kind and id when
    /// the header could be read (kind 0 and id 0 otherwise), and the raw version when it is
    /// supported ([`PROTOCOL_V1`] otherwise), with `status` (normally
    /// [`ProtoError::status`]). Always writable: a NEGOTIATE kind gets the negotiate version.
    #[must_use]
    pub fn for_malformed(raw: &[u8], status: NtStatus) -> Reply<'static> {
        let (kind, version, id) = match peek_header(raw) {
            Some(h) => (h.kind, h.version.get(), h.id.get()),
            None => (MessageKind::new(0), PROTOCOL_V1, 0),
        };
        let version = if kind == MessageKind::NEGOTIATE || !is_supported_version(version) {
            PROTOCOL_V1
        } else {
            version
        };
        Self::status_only(kind, version, id, status)
    }

    /// The encoded size.
    #[must_use]
    pub const fn encoded_len(&self) -> usize {
        HEADER_SIZE
            + match self.body {
                ReplyBody::Empty => 0,
                ReplyBody::Negotiate { .. } => size_of::<NegotiateReply>(),
                ReplyBody::Ping { .. } => size_of::<PingBody>(),
                ReplyBody::Echo { payload } => payload.len(),
                ReplyBody::EchoBulk { .. } => size_of::<BulkRef>(),
            }
    }

    /// Writes the reply to the front of `buf`; returns the bytes written. The output always
    /// parses back with [`parse_reply`]`(.., self.kind, self.id)` to `self`.
    ///
    /// A failure reply may carry any kind (it may answer a message whose kind is unknown); a
    /// success reply needs a known kind and the body of the reply rule.
    ///
    /// # Errors
    /// [`ProtoError::BufferTooSmall`], [`ProtoError::PayloadTooLarge`],
    /// [`ProtoError::UnsupportedVersion`], [`ProtoError::UnknownKind`],
    /// [`ProtoError::BodyShape`].
    #[inline(always)]
    pub fn write(&self, buf: &mut [u8]) -> Result<usize, ProtoError> {
        self.write_bytes(buf).map(<[u8]>::len)
    }

    /// [`write`](Self::write), returning the bytes written: the front of `buf`, ready to send
    /// (no second bounds check for the caller).
    ///
    /// # Errors
    /// As [`write`](Self::write).
    #[inline(always)]
    pub fn write_bytes<'b>(&self, buf: &'b mut [u8]) -> Result<&'b [u8], ProtoError> {
        let kind = self.kind;
        if self.status.is_success() {
            check_write_version(kind, self.version)?;
        } else {
            // A failure may answer a kind its version does not have (a 1.1 kind in a 1.0
            // message is answered, as an unknown kind, in 1.0).
            if !is_supported_version(self.version) {
                return Err(ProtoError::UnsupportedVersion(self.version));
            }
            check_negotiate_version(kind, self.version)?;
        }
        let h = header(
            self.version,
            kind,
            MessageFlags::REPLY,
            self.status,
            self.id,
        );
        let shape_ok = match (self.status.is_success(), kind, self.body) {
            (false, _, ReplyBody::Empty)
            | (
                true,
                MessageKind::SEND
                | MessageKind::NOTIFY
                | MessageKind::BULK_OFFER
                | MessageKind::SEND_BULK,
                ReplyBody::Empty,
            )
            | (true, MessageKind::ECHO_BULK, ReplyBody::EchoBulk { .. })
            | (true, MessageKind::NEGOTIATE, ReplyBody::Negotiate { .. })
            | (true, MessageKind::PING, ReplyBody::Ping { .. })
            | (true, MessageKind::ECHO, ReplyBody::Echo { .. }) => true,
            (true, k, _) if !k.is_known() => return Err(ProtoError::UnknownKind(k.get())),
            _ => false,
        };
        if !shape_ok {
            return Err(ProtoError::BodyShape { kind });
        }
        match self.body {
            ReplyBody::Empty => write_frame_bytes(buf, h, &[]),
            ReplyBody::Negotiate { version } => {
                let body = NegotiateReply {
                    version: U32::new(version),
                    reserved: U32::ZERO,
                };
                write_frame_bytes(buf, h, body.as_bytes())
            }
            ReplyBody::Ping { nonce } => {
                let body = PingBody {
                    nonce: U64::new(nonce),
                };
                write_frame_bytes(buf, h, body.as_bytes())
            }
            ReplyBody::Echo { payload } => write_frame_bytes(buf, h, payload),
            ReplyBody::EchoBulk { offset, len } => {
                write_frame_bytes(buf, h, bulk_ref_body(offset, len)?.as_bytes())
            }
        }
    }
}
