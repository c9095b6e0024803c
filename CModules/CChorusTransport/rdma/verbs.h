// Internal to the transport: RDMA links (rdma_cm + verbs, loaded at run time) that carry the data
// frames of a TCP connection. The TCP connection keeps control frames, heartbeats and credits.
#ifndef CHORUS_RDMA_H
#define CHORUS_RDMA_H
#include "../core/failure.h"

#include <stddef.h>
#include <stdint.h>

// Building the RDMA backend needs the verbs and rdma_cm headers (libibverbs-dev, librdmacm-dev);
// building Chorus does not. Without them the RDMA data path is left out, verbs.c keeps only the
// public calls (each answers CHORUS_ERR_NO_RDMA with the reason), and consumers need no RDMA
// packages at all. Everything below the probe exists only with the headers.
#if defined(__has_include)
#if __has_include(<infiniband/verbs.h>) && __has_include(<rdma/rdma_cma.h>)
#define CHORUS_HAVE_RDMA_HEADERS 1
#endif
#endif

/// Registered message slots per direction and link, and their size. A data frame travels as
/// messages of one slot each: a 32-byte frame header, the payload offset (u32) and chunk length
/// (u32), then the chunk.
#define CHORUS_RDMA_SLOTS 32
#define CHORUS_RDMA_SLOT_BYTES (64 * 1024)
#define CHORUS_RDMA_MESSAGE_HEADER (CHORUS_FRAME_HEADER_BYTES + 8)
#define CHORUS_RDMA_CHUNK_BYTES (CHORUS_RDMA_SLOT_BYTES - CHORUS_RDMA_MESSAGE_HEADER)

typedef struct rdma_link rdma_link;
typedef struct rdma_listener rdma_listener;

// Every function below needs the libraries loaded: call chorus_rdma_probe (public) first.

int rdma_listener_create(const char *host, uint16_t port, rdma_listener **out);
int rdma_listener_fd(const rdma_listener *listener);
void rdma_listener_destroy(rdma_listener *listener);
/// Takes the next connect request, if any: the new link (resources set up, not yet accepted), the
/// dialer's TCP source port and address. Returns 1 when it took one, 0 when none is waiting.
int rdma_listener_take(rdma_listener *listener, rdma_link **link, uint16_t *tcp_port, char peer[64]);
chorus_failure rdma_link_accept(rdma_link *link);
void rdma_link_reject(rdma_link *link);

/// Connects to host:port, naming the TCP connection by its local port; blocks until established.
int rdma_link_connect(const char *host, uint16_t port, uint16_t tcp_port, int timeout_ms, rdma_link **out);

int rdma_link_cq_fd(const rdma_link *link);
int rdma_link_cm_fd(const rdma_link *link);
int rdma_link_established(const rdma_link *link);
/// Handles the link's CM events: CHORUS_OK, or CHORUS_ERR_PEER_CLOSED when it disconnected.
int rdma_link_cm_events(rdma_link *link);
void rdma_link_destroy(rdma_link *link);

typedef void (*rdma_completion_fn)(void *context, int is_send, int slot, uint32_t bytes);
/// Takes the completion-channel event, re-arms it and polls every completion. No failure, or
/// CHORUS_ERR_PEER_CLOSED when a work request failed (the QP went to error), or a failed call.
chorus_failure rdma_link_poll(rdma_link *link, rdma_completion_fn on_completion, void *context);
uint8_t *rdma_link_send_slot(rdma_link *link, int slot);
const uint8_t *rdma_link_recv_slot(rdma_link *link, int slot);
chorus_failure rdma_link_post_send(rdma_link *link, int slot, uint32_t bytes);
chorus_failure rdma_link_post_recv(rdma_link *link, int slot);
/// True (with the key) when [address, address + length) lies in memory a caller registered
/// (`chorus_rdma_register`); its region on this link's device is made at the first call.
int rdma_link_registered_key(rdma_link *link, const void *address, size_t length, uint32_t *lkey);
/// Sends the slot's message header followed by `bytes` of registered memory, without copying.
chorus_failure rdma_link_post_send_gather(rdma_link *link, int slot, const void *payload, uint32_t bytes, uint32_t lkey);
#endif
