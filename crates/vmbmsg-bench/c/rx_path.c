/*
 * The vmbmsg receive path written in straightforward C, against the same KMCL API
 * (vmbkmcl_portable.h, the declarations kmcl-sys binds) and linked against the same model.
 * It does what the Rust driver's `on_packet` does for every host packet: count it, parse and
 * validate the 24-byte header (same rules, same order, same statuses as
 * vmbmsg_proto::wire::parse_host_message), check the session (negotiated, same version), then
 * ECHO: take a preallocated reply buffer (the lowest free one of a mask, one compare-exchange),
 * write the reply header and copy the payload, count the status, VmbChannelPacketComplete,
 * give the buffer back (one atomic or);
 * NOTIFY: copy the payload into a bounded queue under a spin lock, reply with a status;
 * anything malformed: a bodiless failure reply echoing the raw kind and id.
 *
 * Like kmcl, it first copies every packet into one of the channel's bounce buffers (claimed from
 * a free mask with a compare-exchange, memcpy, given back after the callback) and parses only
 * that copy, so that the comparison holds the same hardening work on both sides.
 *
 * Also a "null" guest that completes every packet with its own bytes (same response size as
 * an ECHO reply): the model's share of a packet, to subtract.
 *
 * Tuned with the same care as the Rust path (docs/performance.md lists each trick and where it
 * is applied on both sides): the hot case is accepted by comparing the 24-byte header as three
 * 64-bit words (version, kind and flags in one; payload length and status in the next) and
 * everything else goes to the rule-by-rule parse, out of line and cold; the ECHO reply header
 * is written with three 64-bit stores; the reply pool and the counters are as the driver's.
 */
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmbkmcl_portable.h"

#define HDR 24u
#define MAX_PAYLOAD 16384u
#define MAX_MESSAGE (HDR + MAX_PAYLOAD)
#define V1 0x00010000u
/* A version the driver knows (its header rules accept it; the session decides which is used).
 * The C path negotiates only 1.0, so a 1.1 message is a revision mismatch, as in the driver's
 * 1.0 sessions; the bulk kinds of 1.1 are not modelled. */
#define V1_1 0x00010001u
#define FLAG_REPLY 1u

enum kind { K_NEGOTIATE = 0x1, K_SEND = 0x2, K_PING = 0x3, K_ECHO = 0x101, K_NOTIFY = 0x102 };

#define S_SUCCESS ((NTSTATUS)0)
#define S_DATA_ERROR ((NTSTATUS)0xC000003E)
#define S_REVISION_MISMATCH ((NTSTATUS)0xC0000059)
#define S_NOT_SUPPORTED ((NTSTATUS)0xC00000BB)
#define S_INVALID_DEVICE_REQUEST ((NTSTATUS)0xC0000010)
#define S_INVALID_DEVICE_STATE ((NTSTATUS)0xC0000184)
#define S_INSUFFICIENT_RESOURCES ((NTSTATUS)0xC000009A)
#define S_QUOTA_EXCEEDED ((NTSTATUS)0xC0000044)
#define S_INVALID_NETWORK_RESPONSE ((NTSTATUS)0xC00000C3)

enum reason {
    R_TRUNCATED, R_LENGTH_MISMATCH, R_UNKNOWN_KIND, R_UNSUPPORTED_VERSION, R_PAYLOAD_TOO_LARGE,
    R_RESERVED_NON_ZERO, R_WRONG_DIRECTION, R_UNEXPECTED_REPLY, R_BAD_VERSION_RANGE, R_PREMATURE,
    R_OTHER, R_COUNT
};

/* The wire header; x86-64 and the model are little-endian, and memcpy handles alignment. */
struct msg_header {
    uint32_t version;
    uint16_t kind;
    uint16_t flags;
    uint32_t payload_len;
    int32_t status;
    uint64_t id;
};
_Static_assert(sizeof(struct msg_header) == HDR, "header is 24 bytes");

typedef _Atomic uint64_t counter;

struct stats {
    counter rx_packets, rx_bytes, echo_count, notify_count, malformed_total;
    counter malformed_by_reason[R_COUNT];
    counter completions_ok, completions_malformed, completions_queue_full, completions_not_ready,
        completions_other, notify_queued, notify_dropped, alloc_failures;
};

#define REPLY_BUFFERS 4 /* as the driver (CoreConfig::reply_buffers) */
#define NOTIFY_DEPTH 32

struct notify_slot {
    uint32_t len;
    uint64_t seq;
    uint8_t data[MAX_PAYLOAD];
};

#define BOUNCE_BUFFERS 4

struct rxc_device {
    VMBCHANNEL channel;
    _Atomic uint32_t ready;
    /* The session's version while ready, 0 otherwise: one word says "ready, at which
     * version" (stored after `ready` is set, cleared before it is). */
    _Atomic uint32_t version;
    struct stats stats;
    _Atomic uint64_t pool_free; /* bit i set: pool[i] is free (as the driver's SlotPool) */
    uint8_t *pool[REPLY_BUFFERS];
    atomic_flag notify_lock;
    uint32_t notify_head, notify_count;
    uint64_t next_seq, dropped_since_last;
    struct notify_slot *notify;
    _Atomic uint64_t next_id;
    _Atomic uint64_t bounce_free; /* bit i set: bounce[i] is free */
    uint8_t *bounce[BOUNCE_BUFFERS];
};

static inline void bump(counter *c) { atomic_fetch_add_explicit(c, 1, memory_order_relaxed); }

static inline void spin_lock(atomic_flag *l) {
    while (atomic_flag_test_and_set_explicit(l, memory_order_acquire)) {
    }
}

static inline void spin_unlock(atomic_flag *l) { atomic_flag_clear_explicit(l, memory_order_release); }

static int status_is_malformed(NTSTATUS s) {
    return s == S_DATA_ERROR || s == S_REVISION_MISMATCH || s == S_NOT_SUPPORTED ||
           s == S_INVALID_DEVICE_REQUEST || s == S_INVALID_NETWORK_RESPONSE;
}

static void count_completion(struct stats *st, NTSTATUS s) {
    if (s >= 0)
        bump(&st->completions_ok);
    else if (s == S_QUOTA_EXCEEDED)
        bump(&st->completions_queue_full);
    else if (s == S_INVALID_DEVICE_STATE)
        bump(&st->completions_not_ready);
    else if (status_is_malformed(s))
        bump(&st->completions_malformed);
    else
        bump(&st->completions_other);
}

static void malformed(struct stats *st, enum reason r) {
    bump(&st->malformed_total);
    bump(&st->malformed_by_reason[r]);
}

/* A status-only reply (REPLY flag, the request's kind and id, no body). */
__attribute__((noinline)) static void complete_status(struct rxc_device *dev, VMBPACKETCOMPLETION pc, uint16_t kind,
                            uint32_t version, uint64_t id, NTSTATUS status) {
    struct msg_header h = {version, kind, FLAG_REPLY, 0, status, id};
    uint8_t buf[HDR];
    memcpy(buf, &h, HDR);
    count_completion(&dev->stats, status);
    VmbChannelPacketComplete(pc, buf, HDR);
}

/* Parses like parse_host_message: returns 0 and the header, or a reason and its status. */
__attribute__((cold, noinline)) static int parse(const uint8_t *data, uint32_t len, struct msg_header *h, enum reason *why,
                 NTSTATUS *status) {
    if (len < HDR) {
        *why = R_TRUNCATED;
        *status = S_DATA_ERROR;
        return -1;
    }
    memcpy(h, data, HDR);
    if (h->version != V1 && h->version != V1_1) {
        *why = R_UNSUPPORTED_VERSION;
        *status = S_REVISION_MISMATCH;
        return -1;
    }
    if (h->flags & ~FLAG_REPLY) {
        *why = R_RESERVED_NON_ZERO;
        *status = S_DATA_ERROR;
        return -1;
    }
    int host_to_guest = h->kind == K_ECHO || h->kind == K_NOTIFY;
    int guest_to_host = h->kind == K_NEGOTIATE || h->kind == K_SEND || h->kind == K_PING;
    if (!host_to_guest && !guest_to_host) {
        *why = R_UNKNOWN_KIND;
        *status = S_NOT_SUPPORTED;
        return -1;
    }
    if ((h->flags & FLAG_REPLY) || !host_to_guest) {
        *why = R_WRONG_DIRECTION;
        *status = S_INVALID_DEVICE_REQUEST;
        return -1;
    }
    if (h->status != 0) {
        *why = R_RESERVED_NON_ZERO;
        *status = S_DATA_ERROR;
        return -1;
    }
    if (h->payload_len > MAX_PAYLOAD) {
        *why = R_PAYLOAD_TOO_LARGE;
        *status = S_DATA_ERROR;
        return -1;
    }
    if (h->payload_len != len - HDR) {
        *why = R_LENGTH_MISMATCH;
        *status = S_DATA_ERROR;
        return -1;
    }
    return 0;
}

/* Inlined into the callback, as the driver's handler is into kmcl's trampoline. */
static inline __attribute__((always_inline)) void echo(struct rxc_device *dev, VMBPACKETCOMPLETION pc, const struct msg_header *req,
                 const uint8_t *payload) {
    /* The lowest free reply buffer, claimed with one compare-exchange; given back by its bit. */
    uint64_t free_mask = atomic_load_explicit(&dev->pool_free, memory_order_relaxed), bit;
    do {
        if (__builtin_expect(free_mask == 0, 0)) {
            bump(&dev->stats.alloc_failures);
            complete_status(dev, pc, K_ECHO, req->version, req->id, S_INSUFFICIENT_RESOURCES);
            return;
        }
        bit = free_mask & -free_mask;
    } while (!atomic_compare_exchange_weak_explicit(&dev->pool_free, &free_mask, free_mask ^ bit,
                                                    memory_order_acquire, memory_order_relaxed));
    uint8_t *buf = dev->pool[__builtin_ctzll(bit)];
    /* The reply header as three 64-bit stores (status 0). */
    uint64_t w0 = (uint64_t)req->version | ((uint64_t)K_ECHO << 32) | ((uint64_t)FLAG_REPLY << 48);
    uint64_t w1 = req->payload_len;
    memcpy(buf, &w0, 8);
    memcpy(buf + 8, &w1, 8);
    memcpy(buf + 16, &req->id, 8);
    memcpy(buf + HDR, payload, req->payload_len);
    bump(&dev->stats.completions_ok);
    VmbChannelPacketComplete(pc, buf, HDR + req->payload_len);
    atomic_fetch_or_explicit(&dev->pool_free, bit, memory_order_release);
}

static NTSTATUS notify(struct rxc_device *dev, const uint8_t *payload, uint32_t len) {
    NTSTATUS s = S_SUCCESS;
    spin_lock(&dev->notify_lock);
    if (dev->notify_count < NOTIFY_DEPTH) {
        struct notify_slot *slot =
            &dev->notify[(dev->notify_head + dev->notify_count) % NOTIFY_DEPTH];
        slot->len = len;
        slot->seq = dev->next_seq++;
        memcpy(slot->data, payload, len);
        dev->notify_count++;
        spin_unlock(&dev->notify_lock);
        bump(&dev->stats.notify_queued);
    } else {
        dev->dropped_since_last++;
        spin_unlock(&dev->notify_lock);
        bump(&dev->stats.notify_dropped);
        s = S_QUOTA_EXCEEDED;
    }
    return s;
}

/* A valid ECHO or NOTIFY of the session's `version`: counted, answered. */
static inline __attribute__((always_inline)) void dispatch(struct rxc_device *dev,
                                                           VMBPACKETCOMPLETION pc,
                                                           const struct msg_header *h,
                                                           const uint8_t *payload,
                                                           uint32_t version) {
    if (h->kind == K_ECHO) {
        bump(&dev->stats.echo_count);
        echo(dev, pc, h, payload);
    } else {
        bump(&dev->stats.notify_count);
        NTSTATUS s = notify(dev, payload, h->payload_len);
        complete_status(dev, pc, K_NOTIFY, version, h->id, s);
    }
}

/* Everything but a well-formed ECHO or NOTIFY: the rule-by-rule parse, out of line. */
__attribute__((cold, noinline)) static void process_other(struct rxc_device *dev,
                                                         VMBPACKETCOMPLETION pc,
                                                         const uint8_t *data, UINT32 len);

static inline __attribute__((always_inline)) void process(struct rxc_device *dev,
                                                          VMBPACKETCOMPLETION pc,
                                                          const uint8_t *data, UINT32 len) {
    bump(&dev->stats.rx_packets);
    atomic_fetch_add_explicit(&dev->stats.rx_bytes, len, memory_order_relaxed);

    /* The hot case, as whole words: the session's version, ECHO or NOTIFY, no flags; status 0
     * and a payload length that is the rest of the packet and at most MAX_PAYLOAD. Exactly the
     * messages parse() accepts in a ready session of that version; everything else (not
     * ready, another version, malformed) goes to process_other, which finds out what. The
     * version is the session's, loaded, not a constant: the driver's protocol has two (this
     * path negotiates 1.0, but a driver of the protocol compares against what it negotiated). */
    uint64_t w[3];
    uint32_t version = atomic_load_explicit(&dev->version, memory_order_acquire);
    if (__builtin_expect(len < HDR || version == 0, 0)) {
        process_other(dev, pc, data, len);
        return;
    }
    memcpy(w, data, HDR);
    const uint64_t echo_w0 = version | ((uint64_t)K_ECHO << 32);
    const uint64_t notify_w0 = version | ((uint64_t)K_NOTIFY << 32);
    if (!((w[0] == echo_w0) | (w[0] == notify_w0)) | (w[1] != (uint64_t)(len - HDR)) |
        (len - HDR > MAX_PAYLOAD)) {
        process_other(dev, pc, data, len);
        return;
    }
    struct msg_header h = {version, (uint16_t)(w[0] >> 32), 0, len - HDR, 0, w[2]};
    dispatch(dev, pc, &h, data + HDR, version);
}

static void process_other(struct rxc_device *dev, VMBPACKETCOMPLETION pc, const uint8_t *data,
                          UINT32 len) {
    struct msg_header h;
    enum reason why;
    NTSTATUS status;
    if (parse(data, len, &h, &why, &status) != 0) {
        malformed(&dev->stats, why);
        /* Reply::for_malformed: raw kind and id when the header is there. */
        uint16_t kind = 0;
        uint32_t version = V1;
        uint64_t id = 0;
        if (len >= HDR) {
            struct msg_header raw;
            memcpy(&raw, data, HDR);
            kind = raw.kind;
            id = raw.id;
            version = (raw.kind == K_NEGOTIATE || (raw.version != V1 && raw.version != V1_1))
                          ? V1
                          : raw.version;
        }
        complete_status(dev, pc, kind, version, id, status);
        return;
    }
    uint32_t version = atomic_load_explicit(&dev->version, memory_order_acquire);
    if (version == 0) {
        malformed(&dev->stats, R_PREMATURE);
        complete_status(dev, pc, h.kind, h.version, h.id, S_INVALID_DEVICE_STATE);
        return;
    }
    if (h.version != version) {
        malformed(&dev->stats, R_UNSUPPORTED_VERSION);
        complete_status(dev, pc, h.kind, h.version, h.id, S_REVISION_MISMATCH);
        return;
    }
    dispatch(dev, pc, &h, data + HDR, version);
}

void rxc_process_packet(VMBCHANNEL channel, VMBPACKETCOMPLETION pc, PVOID buffer, UINT32 len,
                        UINT32 flags) {
    (void)flags;
    struct rxc_device *dev = VmbChannelGetPointer(channel);
    /* One call of process() (inlined here once, as the driver's handler is into kmcl's
     * trampoline), with the copy or, for an empty packet, no bytes and no slot (bit 0). */
    const uint8_t *data = NULL;
    uint64_t bit = 0;
    if (len == 0 || buffer == NULL) {
        len = 0;
    } else {
        if (len > MAX_MESSAGE) {
            VmbChannelPacketFail(pc);
            return;
        }
        uint64_t free_mask = atomic_load_explicit(&dev->bounce_free, memory_order_relaxed);
        do {
            if (free_mask == 0) {
                VmbChannelPacketDeferToPassive(pc);
                return;
            }
            bit = free_mask & -free_mask;
        } while (!atomic_compare_exchange_weak_explicit(&dev->bounce_free, &free_mask,
                                                        free_mask ^ bit, memory_order_acquire,
                                                        memory_order_relaxed));
        uint8_t *slot = dev->bounce[__builtin_ctzll(bit)];
        memcpy(slot, buffer, len);
        data = slot;
    }
    process(dev, pc, data, len);
    atomic_fetch_or_explicit(&dev->bounce_free, bit, memory_order_release);
}

/* The model's floor: complete with the packet's own bytes, nothing else. */
void null_process_packet(VMBCHANNEL channel, VMBPACKETCOMPLETION pc, PVOID buffer, UINT32 len,
                         UINT32 flags) {
    (void)channel;
    (void)flags;
    VmbChannelPacketComplete(pc, buffer, len);
}

/* Negotiation, as the driver does it from EvtChannelPostStarted: a synchronous NEGOTIATE. */
static void rxc_post_started(VMBCHANNEL channel) {
    struct rxc_device *dev = VmbChannelGetPointer(channel);
    struct {
        struct msg_header h;
        uint32_t min, max;
    } req = {{V1, K_NEGOTIATE, 0, 8, 0, atomic_fetch_add(&dev->next_id, 1)}, V1, V1};
    uint8_t reply[32];
    UINT32 size = sizeof reply;
    LARGE_INTEGER timeout = {.QuadPart = -50000000LL}; /* 5 s */
    NTSTATUS s = VmbChannelSendSynchronousRequest(channel, &req, sizeof req, NULL,
                                                  VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
                                                  reply, &size, &timeout);
    if (s != S_SUCCESS || size != 32)
        return;
    struct msg_header rh;
    uint32_t chosen;
    memcpy(&rh, reply, HDR);
    memcpy(&chosen, reply + HDR, 4);
    if (rh.status == S_SUCCESS && rh.flags == FLAG_REPLY && rh.kind == K_NEGOTIATE &&
        rh.id == req.h.id && chosen == V1) {
        atomic_store(&dev->ready, 1);
        atomic_store(&dev->version, chosen);
    }
}

static void rxc_suspend(VMBCHANNEL channel) {
    struct rxc_device *dev = VmbChannelGetPointer(channel);
    atomic_store(&dev->version, 0);
    atomic_store(&dev->ready, 0);
}

/* Allocates, configures and enables a channel under `parent` whose packets go to the C path
 * (`null_guest` != 0: the null guest). NULL on failure. */
struct rxc_device *rxc_start(PDEVICE_OBJECT parent, const GUID *interface_type, int null_guest) {
    struct rxc_device *dev = calloc(1, sizeof *dev);
    if (!dev)
        return NULL;
    atomic_flag_clear(&dev->notify_lock);
    dev->next_seq = 1;
    atomic_store(&dev->next_id, 1);
    dev->notify = calloc(NOTIFY_DEPTH, sizeof *dev->notify);
    for (int i = 0; i < REPLY_BUFFERS; i++) {
        dev->pool[i] = malloc(MAX_MESSAGE);
        if (!dev->pool[i] || !dev->notify)
            return NULL;
    }
    atomic_store(&dev->pool_free, (1ull << REPLY_BUFFERS) - 1);
    for (int i = 0; i < BOUNCE_BUFFERS; i++) {
        dev->bounce[i] = malloc(MAX_MESSAGE);
        if (!dev->bounce[i])
            return NULL;
    }
    atomic_store(&dev->bounce_free, (1ull << BOUNCE_BUFFERS) - 1);
    if (VmbChannelAllocate(parent, 0, &dev->channel) != S_SUCCESS)
        return NULL;
    VmbChannelSetPointer(dev->channel, dev);
    VMB_CHANNEL_STATE_CHANGE_CALLBACKS cbs = {0};
    cbs.Version = 1;
    cbs.Size = sizeof cbs;
    cbs.EvtChannelPostStarted = rxc_post_started;
    cbs.EvtChannelSuspend = rxc_suspend;
    NTSTATUS s = VmbChannelInitSetMaximumPacketSize(dev->channel, MAX_MESSAGE);
    if (s == S_SUCCESS)
        s = VmbChannelInitSetProcessPacketCallbacks(
            dev->channel, null_guest ? null_process_packet : rxc_process_packet,
            /* No end-of-batch callback: the driver's handler has none, so kmcl registers none
             * (ChannelHandler::PROCESSING_COMPLETE); the model's per-batch work is the same
             * for every guest here. */
            NULL);
    if (s == S_SUCCESS)
        s = VmbChannelInitSetStateChangeCallbacks(dev->channel, &cbs);
    if (s == S_SUCCESS)
        s = VmbClientChannelInitSetRingBufferPageCount(dev->channel, 32, 32);
    if (s == S_SUCCESS)
        s = VmbClientChannelInitSetTargetPnp(dev->channel, interface_type, NULL, NULL);
    if (s == S_SUCCESS)
        s = VmbChannelEnable(dev->channel);
    return s == S_SUCCESS ? dev : NULL;
}

int rxc_ready(const struct rxc_device *dev) { return atomic_load(&dev->ready) != 0; }

uint64_t rxc_echo_count(const struct rxc_device *dev) { return atomic_load(&dev->stats.echo_count); }

void rxc_stop(struct rxc_device *dev) {
    VmbChannelDisable(dev->channel);
    VmbChannelCleanup(dev->channel);
    for (int i = 0; i < REPLY_BUFFERS; i++)
        free(dev->pool[i]);
    for (int i = 0; i < BOUNCE_BUFFERS; i++)
        free(dev->bounce[i]);
    free(dev->notify);
    free(dev);
}
