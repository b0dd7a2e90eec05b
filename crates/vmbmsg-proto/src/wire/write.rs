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
fn write_frame(
    buf: &mut [u8],
    mut header: MessageHeader,
    body: &[u8],
) -> Result<usize, ProtoError> {
    header.payload_len = U32::new(payload_len_u32(body.len())?);
    let total = HEADER_SIZE + body.len();
    let got = buf.len();
    let out = buf
        .get_mut(..total)
        .ok_or(ProtoError::BufferTooSmall { needed: total, got })?;
    let (head, tail) = out
        .split_at_mut_checked(HEADER_SIZE)
        .ok_or(ProtoError::BufferTooSmall { needed: total, got })?;
    head.copy_from_slice(header.as_bytes());
    tail.copy_from_slice(body);
    Ok(total)
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

    /// The message kind.
    #[must_use]
    pub const fn kind(&self) -> MessageKind {
        match self.body {
            HostBody::Echo { .. } => MessageKind::ECHO,
            HostBody::Notify { .. } => MessageKind::NOTIFY,
        }
    }

    /// The encoded size.
    #[must_use]
    pub const fn encoded_len(&self) -> usize {
        match self.body {
            HostBody::Echo { payload } | HostBody::Notify { payload } => {
                HEADER_SIZE + payload.len()
            }
        }
    }

    /// Writes the message to the front of `buf`; returns the bytes written. The output always
    /// parses back with [`parse_host_message`] to `self`.
    ///
    /// # Errors
    /// [`ProtoError::BufferTooSmall`], [`ProtoError::PayloadTooLarge`],
    /// [`ProtoError::UnsupportedVersion`].
    pub fn write(&self, buf: &mut [u8]) -> Result<usize, ProtoError> {
        let kind = self.kind();
        check_write_version(kind, self.version)?;
        let payload = match self.body {
            HostBody::Echo { payload } | HostBody::Notify { payload } => payload,
        };
        let h = header(
            self.version,
            kind,
            MessageFlags::NONE,
            NtStatus::STATUS_SUCCESS,
            self.id,
        );
        write_frame(buf, h, payload)
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

    /// The message kind.
    #[must_use]
    pub const fn kind(&self) -> MessageKind {
        match self.body {
            GuestBody::Negotiate { .. } => MessageKind::NEGOTIATE,
            GuestBody::Send { .. } => MessageKind::SEND,
            GuestBody::Ping { .. } => MessageKind::PING,
        }
    }

    /// The encoded size.
    #[must_use]
    pub const fn encoded_len(&self) -> usize {
        match self.body {
            GuestBody::Negotiate { .. } => NEGOTIATE_REQUEST_SIZE,
            GuestBody::Send { payload } => HEADER_SIZE + payload.len(),
            GuestBody::Ping { .. } => PING_SIZE,
        }
    }

    /// Writes the message to the front of `buf`; returns the bytes written. The output always
    /// parses back with [`parse_guest_message`] to `self`.
    ///
    /// # Errors
    /// [`ProtoError::BufferTooSmall`], [`ProtoError::PayloadTooLarge`],
    /// [`ProtoError::UnsupportedVersion`], [`ProtoError::InvalidVersionRange`].
    pub fn write(&self, buf: &mut [u8]) -> Result<usize, ProtoError> {
        let kind = self.kind();
        check_write_version(kind, self.version)?;
        let h = header(
            self.version,
            kind,
            MessageFlags::NONE,
            NtStatus::STATUS_SUCCESS,
            self.id,
        );
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
        }
    }
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

    /// A reply without a body: any failure, or a SEND / NOTIFY success.
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
    #[inline]
    pub fn write(&self, buf: &mut [u8]) -> Result<usize, ProtoError> {
        let kind = self.kind;
        check_write_version(kind, self.version)?;
        let h = header(
            self.version,
            kind,
            MessageFlags::REPLY,
            self.status,
            self.id,
        );
        let shape_ok = match (self.status.is_success(), kind, self.body) {
            (false, _, ReplyBody::Empty)
            | (true, MessageKind::SEND | MessageKind::NOTIFY, ReplyBody::Empty)
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
            ReplyBody::Empty => write_frame(buf, h, &[]),
            ReplyBody::Negotiate { version } => {
                let body = NegotiateReply {
                    version: U32::new(version),
                    reserved: U32::ZERO,
                };
                write_frame(buf, h, body.as_bytes())
            }
            ReplyBody::Ping { nonce } => {
                let body = PingBody {
                    nonce: U64::new(nonce),
                };
                write_frame(buf, h, body.as_bytes())
            }
            ReplyBody::Echo { payload } => write_frame(buf, h, payload),
        }
    }
}
