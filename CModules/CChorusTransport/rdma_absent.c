// The RDMA backend of a build made without the verbs and rdma_cm headers: every call reports RDMA
// as unavailable, with the reason, so `.auto` falls back to TCP and `.rdma` fails with a clear error.
#include "rdma.h"
#if !CHORUS_HAVE_RDMA_HEADERS
#include <stdio.h>

static const char reason[] =
    "this build of Chorus has no RDMA backend: libibverbs-dev and librdmacm-dev were not installed when it was compiled";

int chorus_rdma_probe(char *why, size_t why_size) {
    if (why != NULL && why_size > 0) snprintf(why, why_size, "%s", reason);
    return CHORUS_ERR_NO_RDMA;
}

int chorus_rdma_register(const void *base, size_t length, uint64_t *handle) {
    (void)base, (void)length, (void)handle;
    return CHORUS_ERR_NO_RDMA;
}

int chorus_rdma_deregister(uint64_t handle) {
    (void)handle;
    return CHORUS_ERR_NO_RDMA;
}

// The engine calls these only for links made while the probe succeeded, which never happens here.
int rdma_listener_create(const char *host, uint16_t port, rdma_listener **out) {
    (void)host, (void)port, (void)out;
    return CHORUS_ERR_NO_RDMA;
}
int rdma_listener_fd(const rdma_listener *listener) { (void)listener; return -1; }
void rdma_listener_destroy(rdma_listener *listener) { (void)listener; }
int rdma_listener_take(rdma_listener *listener, rdma_link **link, uint16_t *tcp_port, char peer[64]) {
    (void)listener, (void)link, (void)tcp_port, (void)peer;
    return CHORUS_ERR_NO_RDMA;
}
int rdma_link_accept(rdma_link *link) { (void)link; return CHORUS_ERR_NO_RDMA; }
void rdma_link_reject(rdma_link *link) { (void)link; }
int rdma_link_connect(const char *host, uint16_t port, uint16_t tcp_port, int timeout_ms, rdma_link **out) {
    (void)host, (void)port, (void)tcp_port, (void)timeout_ms, (void)out;
    return CHORUS_ERR_NO_RDMA;
}
int rdma_link_cq_fd(const rdma_link *link) { (void)link; return -1; }
int rdma_link_cm_fd(const rdma_link *link) { (void)link; return -1; }
int rdma_link_established(const rdma_link *link) { (void)link; return 0; }
int rdma_link_cm_events(rdma_link *link) { (void)link; return CHORUS_ERR_NO_RDMA; }
void rdma_link_destroy(rdma_link *link) { (void)link; }
int rdma_link_poll(rdma_link *link, rdma_completion_fn on_completion, void *context) {
    (void)link, (void)on_completion, (void)context;
    return CHORUS_ERR_NO_RDMA;
}
uint8_t *rdma_link_send_slot(rdma_link *link, int slot) { (void)link, (void)slot; return NULL; }
const uint8_t *rdma_link_recv_slot(rdma_link *link, int slot) { (void)link, (void)slot; return NULL; }
int rdma_link_post_send(rdma_link *link, int slot, uint32_t bytes) {
    (void)link, (void)slot, (void)bytes;
    return CHORUS_ERR_NO_RDMA;
}
int rdma_link_post_recv(rdma_link *link, int slot) { (void)link, (void)slot; return CHORUS_ERR_NO_RDMA; }
int rdma_link_registered_key(rdma_link *link, const void *address, size_t length, uint32_t *lkey) {
    (void)link, (void)address, (void)length, (void)lkey;
    return 0;
}
int rdma_link_post_send_gather(rdma_link *link, int slot, const void *payload, uint32_t bytes, uint32_t lkey) {
    (void)link, (void)slot, (void)payload, (void)bytes, (void)lkey;
    return CHORUS_ERR_NO_RDMA;
}
#endif // !CHORUS_HAVE_RDMA_HEADERS
