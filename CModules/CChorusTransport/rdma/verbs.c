// RDMA links over rdma_cm and verbs. The libraries are loaded at run time (as NCCL does), so the
// transport builds and runs on machines without them; asking for RDMA there gives a clear error.
#define _GNU_SOURCE
#include "verbs.h"
#if CHORUS_HAVE_RDMA_HEADERS

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include "../core/sockets.h"

// MARK: - Loading

/// The library functions we call (the data path's post/poll/notify are inline in verbs.h).
static struct {
    struct ibv_device **(*get_device_list)(int *);
    void (*free_device_list)(struct ibv_device **);
    struct ibv_pd *(*alloc_pd)(struct ibv_context *);
    int (*dealloc_pd)(struct ibv_pd *);
    struct ibv_mr *(*reg_mr)(struct ibv_pd *, void *, size_t, int);
    int (*dereg_mr)(struct ibv_mr *);
    struct ibv_comp_channel *(*create_comp_channel)(struct ibv_context *);
    int (*destroy_comp_channel)(struct ibv_comp_channel *);
    struct ibv_cq *(*create_cq)(struct ibv_context *, int, void *, struct ibv_comp_channel *, int);
    int (*destroy_cq)(struct ibv_cq *);
    int (*get_cq_event)(struct ibv_comp_channel *, struct ibv_cq **, void **);
    void (*ack_cq_events)(struct ibv_cq *, unsigned int);
    struct rdma_event_channel *(*create_event_channel)(void);
    void (*destroy_event_channel)(struct rdma_event_channel *);
    int (*create_id)(struct rdma_event_channel *, struct rdma_cm_id **, void *, enum rdma_port_space);
    int (*destroy_id)(struct rdma_cm_id *);
    int (*bind_addr)(struct rdma_cm_id *, struct sockaddr *);
    int (*listen)(struct rdma_cm_id *, int);
    int (*resolve_addr)(struct rdma_cm_id *, struct sockaddr *, struct sockaddr *, int);
    int (*resolve_route)(struct rdma_cm_id *, int);
    int (*connect)(struct rdma_cm_id *, struct rdma_conn_param *);
    int (*accept)(struct rdma_cm_id *, struct rdma_conn_param *);
    int (*reject)(struct rdma_cm_id *, const void *, uint8_t);
    int (*disconnect)(struct rdma_cm_id *);
    int (*get_cm_event)(struct rdma_event_channel *, struct rdma_cm_event **);
    int (*ack_cm_event)(struct rdma_cm_event *);
    int (*create_qp)(struct rdma_cm_id *, struct ibv_pd *, struct ibv_qp_init_attr *);
    void (*destroy_qp)(struct rdma_cm_id *);
    int (*migrate_id)(struct rdma_cm_id *, struct rdma_event_channel *);
    const char *(*event_str)(enum rdma_cm_event_type);
    int (*set_option)(struct rdma_cm_id *, int, int, void *, size_t);
} V;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_error[256];

static void load_libraries(void) {
    void *verbs = dlopen("libibverbs.so.1", RTLD_NOW | RTLD_GLOBAL);
    void *cm = verbs ? dlopen("librdmacm.so.1", RTLD_NOW | RTLD_GLOBAL) : NULL;
    if (cm == NULL) {
        snprintf(load_error, sizeof load_error,
                 "cannot load the RDMA libraries (%s); install libibverbs1, librdmacm1 and ibverbs-providers", dlerror());
        return;
    }
#define LOAD(lib, field, name)                                                                 \
    if ((*(void **)&V.field = dlsym(lib, name)) == NULL) {                                     \
        snprintf(load_error, sizeof load_error, "the RDMA library lacks %s", name);            \
        return;                                                                                \
    }
    LOAD(verbs, get_device_list, "ibv_get_device_list") LOAD(verbs, free_device_list, "ibv_free_device_list")
    LOAD(verbs, alloc_pd, "ibv_alloc_pd") LOAD(verbs, dealloc_pd, "ibv_dealloc_pd")
    LOAD(verbs, reg_mr, "ibv_reg_mr") LOAD(verbs, dereg_mr, "ibv_dereg_mr")
    LOAD(verbs, create_comp_channel, "ibv_create_comp_channel") LOAD(verbs, destroy_comp_channel, "ibv_destroy_comp_channel")
    LOAD(verbs, create_cq, "ibv_create_cq") LOAD(verbs, destroy_cq, "ibv_destroy_cq")
    LOAD(verbs, get_cq_event, "ibv_get_cq_event") LOAD(verbs, ack_cq_events, "ibv_ack_cq_events")
    LOAD(cm, create_event_channel, "rdma_create_event_channel") LOAD(cm, destroy_event_channel, "rdma_destroy_event_channel")
    LOAD(cm, create_id, "rdma_create_id") LOAD(cm, destroy_id, "rdma_destroy_id")
    LOAD(cm, bind_addr, "rdma_bind_addr") LOAD(cm, listen, "rdma_listen")
    LOAD(cm, resolve_addr, "rdma_resolve_addr") LOAD(cm, resolve_route, "rdma_resolve_route")
    LOAD(cm, connect, "rdma_connect") LOAD(cm, accept, "rdma_accept") LOAD(cm, reject, "rdma_reject")
    LOAD(cm, disconnect, "rdma_disconnect") LOAD(cm, get_cm_event, "rdma_get_cm_event")
    LOAD(cm, ack_cm_event, "rdma_ack_cm_event") LOAD(cm, create_qp, "rdma_create_qp")
    LOAD(cm, destroy_qp, "rdma_destroy_qp") LOAD(cm, migrate_id, "rdma_migrate_id")
    LOAD(cm, event_str, "rdma_event_str") LOAD(cm, set_option, "rdma_set_option")
#undef LOAD
    errno = 0;
    int count = 0;
    struct ibv_device **devices = V.get_device_list(&count);
    if (devices == NULL) {
        snprintf(load_error, sizeof load_error, "no RDMA support: ibv_get_device_list failed (%s%s)", strerror(errno),
                 errno == ENOSYS ? ": the kernel has no RDMA subsystem" : "");
        return;
    }
    V.free_device_list(devices);
    if (count == 0) snprintf(load_error, sizeof load_error, "no RDMA device: ibv_get_device_list found none");
}

int chorus_rdma_probe(char *why, size_t why_size) {
    pthread_once(&load_once, load_libraries);
    if (load_error[0] == 0) return CHORUS_OK;
    if (why != NULL && why_size > 0) snprintf(why, why_size, "%s", load_error);
    return CHORUS_ERR_NO_RDMA;
}


// MARK: - Protection domains and registered memory

/// One protection domain per device for the process's life, shared by every link on that device
/// (rdma_cm opens each device once per process), so a caller's registered buffer needs one memory
/// region per device, not one per link.
#define MAX_DEVICES 8
static pthread_mutex_t memory_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ibv_context *pd_contexts[MAX_DEVICES];
static struct ibv_pd *pds[MAX_DEVICES];
static int pd_count;

/// Memory a caller registered: its regions are made lazily, once per device, at the first send
/// from it, and kept until it is deregistered.
typedef struct registration {
    struct registration *next;
    uint64_t handle;
    uintptr_t base;
    size_t length;
    struct ibv_mr *regions[MAX_DEVICES];
} registration;
static registration *registrations;
static int registration_count; // also read without the lock: most programs register nothing
static uint64_t next_handle = 1;

/// The device's shared PD and its index; NULL when it cannot be made. Caller holds memory_lock.
static struct ibv_pd *shared_pd_locked(struct ibv_context *context, int *index) {
    for (int i = 0; i < pd_count; i++) {
        if (pd_contexts[i] == context) {
            *index = i;
            return pds[i];
        }
    }
    if (pd_count == MAX_DEVICES) return NULL;
    struct ibv_pd *pd = V.alloc_pd(context);
    if (pd == NULL) return NULL;
    pd_contexts[pd_count] = context;
    pds[pd_count] = pd;
    *index = pd_count;
    return pds[pd_count++];
}

int chorus_rdma_register(const void *base, size_t length, uint64_t *handle) {
    if (base == NULL || length == 0 || handle == NULL) return CHORUS_ERR_INVALID_ARGUMENT;
    int status = chorus_rdma_probe(NULL, 0);
    if (status != CHORUS_OK) return status;
    registration *r = calloc(1, sizeof *r);
    if (r == NULL) return CHORUS_ERR_SYSTEM;
    r->base = (uintptr_t)base;
    r->length = length;
    pthread_mutex_lock(&memory_lock);
    r->handle = next_handle++;
    r->next = registrations;
    registrations = r;
    __atomic_store_n(&registration_count, registration_count + 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&memory_lock);
    *handle = r->handle;
    return CHORUS_OK;
}

int chorus_rdma_deregister(uint64_t handle) {
    pthread_mutex_lock(&memory_lock);
    registration **at = &registrations;
    while (*at != NULL && (*at)->handle != handle) at = &(*at)->next;
    registration *r = *at;
    if (r != NULL) {
        *at = r->next;
        __atomic_store_n(&registration_count, registration_count - 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&memory_lock);
    if (r == NULL) return CHORUS_ERR_INVALID_ARGUMENT;
    for (int i = 0; i < MAX_DEVICES; i++)
        if (r->regions[i] != NULL) V.dereg_mr(r->regions[i]);
    free(r);
    return CHORUS_OK;
}

// MARK: - Links

struct rdma_link {
    struct rdma_event_channel *events;
    struct rdma_cm_id *id;
    struct ibv_pd *pd; // the device's shared PD
    int pd_index;
    struct ibv_comp_channel *completions;
    struct ibv_cq *cq;
    struct ibv_mr *mr;
    uint8_t *memory; // CHORUS_RDMA_SLOTS send slots, then as many receive slots
    int established;
};

struct rdma_listener {
    struct rdma_event_channel *events;
    struct rdma_cm_id *id;
};

/// What the dialer's connect request carries: which TCP connection this link belongs to.
typedef struct link_hello {
    uint32_t magic;
    uint16_t tcp_port;
    uint16_t reserved;
} link_hello;

static int set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL);
    return flags < 0 ? -1 : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

/// Local ACK timeout 4.096 µs * 2^14 = 67 ms: a lost packet is retransmitted (retry_count times)
/// instead of waiting forever, and a dead peer turns the QP to error.
static const uint8_t ack_timeout = 14;

static int setup_resources(rdma_link *l) {
    struct ibv_context *verbs = l->id->verbs;
    uint8_t timeout = ack_timeout;
    V.set_option(l->id, RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT, &timeout, sizeof timeout);
    size_t bytes = 2u * CHORUS_RDMA_SLOTS * CHORUS_RDMA_SLOT_BYTES;
    pthread_mutex_lock(&memory_lock);
    l->pd = shared_pd_locked(verbs, &l->pd_index);
    pthread_mutex_unlock(&memory_lock);
    if (l->pd == NULL) return CHORUS_ERR_SYSTEM;
    if ((l->completions = V.create_comp_channel(verbs)) == NULL || set_nonblocking(l->completions->fd) != 0) return CHORUS_ERR_SYSTEM;
    if ((l->cq = V.create_cq(verbs, 2 * CHORUS_RDMA_SLOTS + 2, NULL, l->completions, 0)) == NULL) return CHORUS_ERR_SYSTEM;
    if (ibv_req_notify_cq(l->cq, 0) != 0) return CHORUS_ERR_SYSTEM;
    struct ibv_qp_init_attr attr = {
        .send_cq = l->cq, .recv_cq = l->cq, .qp_type = IBV_QPT_RC, .sq_sig_all = 1,
        .cap = {.max_send_wr = CHORUS_RDMA_SLOTS, .max_recv_wr = CHORUS_RDMA_SLOTS, .max_send_sge = 2, .max_recv_sge = 1},
    };
    if (V.create_qp(l->id, l->pd, &attr) != 0) return CHORUS_ERR_SYSTEM;
    if ((l->memory = aligned_alloc(4096, bytes)) == NULL) return CHORUS_ERR_SYSTEM;
    if ((l->mr = V.reg_mr(l->pd, l->memory, bytes, IBV_ACCESS_LOCAL_WRITE)) == NULL) return CHORUS_ERR_SYSTEM;
    for (int slot = 0; slot < CHORUS_RDMA_SLOTS; slot++)
        if (rdma_link_post_recv(l, slot).status != CHORUS_OK) return CHORUS_ERR_SYSTEM;
    return CHORUS_OK;
}

void rdma_link_destroy(rdma_link *l) {
    if (l == NULL) return;
    if (l->id != NULL) {
        if (l->established) V.disconnect(l->id);
        if (l->id->qp != NULL) V.destroy_qp(l->id);
    }
    if (l->mr != NULL) V.dereg_mr(l->mr);
    free(l->memory);
    if (l->cq != NULL) V.destroy_cq(l->cq);
    if (l->completions != NULL) V.destroy_comp_channel(l->completions);
    if (l->id != NULL) V.destroy_id(l->id);
    if (l->events != NULL) V.destroy_event_channel(l->events);
    free(l);
}

/// The first address of host:port (rdma_cm takes one address, not a list).
static int resolve(const char *host, uint16_t port, struct sockaddr_storage *out) {
    struct addrinfo *found = NULL;
    int status = chorus_socket_resolve(host, port, 0, &found);
    if (status != CHORUS_OK) return status;
    memcpy(out, found->ai_addr, found->ai_addrlen);
    freeaddrinfo(found);
    return CHORUS_OK;
}

/// Waits (bounded) for the next CM event on a blocking channel and checks it is `expected`.
static int await_event(rdma_link *l, enum rdma_cm_event_type expected, uint64_t deadline_ms) {
    uint64_t now = chorus_now_ms();
    struct pollfd p = {.fd = l->events->fd, .events = POLLIN};
    if (now >= deadline_ms || poll(&p, 1, (int)(deadline_ms - now)) != 1) return CHORUS_ERR_CONNECT_FAILED;
    struct rdma_cm_event *event;
    if (V.get_cm_event(l->events, &event) != 0) return CHORUS_ERR_SYSTEM;
    enum rdma_cm_event_type got = event->event;
    V.ack_cm_event(event);
    return got == expected ? CHORUS_OK : CHORUS_ERR_CONNECT_FAILED;
}

int rdma_link_connect(const char *host, uint16_t port, uint16_t tcp_port, int timeout_ms, rdma_link **out) {
    struct sockaddr_storage address;
    int status = resolve(host, port, &address);
    if (status != CHORUS_OK) return status;
    rdma_link *l = calloc(1, sizeof *l);
    if (l == NULL) return CHORUS_ERR_SYSTEM;
    uint64_t deadline = chorus_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 1);
    if ((l->events = V.create_event_channel()) == NULL || V.create_id(l->events, &l->id, NULL, RDMA_PS_TCP) != 0) {
        status = CHORUS_ERR_SYSTEM;
    } else if (V.resolve_addr(l->id, NULL, (struct sockaddr *)&address, timeout_ms) != 0) {
        status = CHORUS_ERR_CONNECT_FAILED;
    } else if ((status = await_event(l, RDMA_CM_EVENT_ADDR_RESOLVED, deadline)) == CHORUS_OK &&
               (status = V.resolve_route(l->id, timeout_ms) == 0 ? CHORUS_OK : CHORUS_ERR_CONNECT_FAILED) == CHORUS_OK &&
               (status = await_event(l, RDMA_CM_EVENT_ROUTE_RESOLVED, deadline)) == CHORUS_OK &&
               (status = setup_resources(l)) == CHORUS_OK) {
        link_hello hello = {.magic = CHORUS_FRAME_MAGIC, .tcp_port = tcp_port};
        struct rdma_conn_param param = {.private_data = &hello, .private_data_len = sizeof hello,
                                        .retry_count = 7, .rnr_retry_count = 7};
        status = V.connect(l->id, &param) == 0 ? await_event(l, RDMA_CM_EVENT_ESTABLISHED, deadline)
                                               : CHORUS_ERR_CONNECT_FAILED;
    }
    if (status == CHORUS_OK && set_nonblocking(l->events->fd) != 0) status = CHORUS_ERR_SYSTEM;
    if (status != CHORUS_OK) {
        rdma_link_destroy(l);
        return status;
    }
    l->established = 1;
    *out = l;
    return CHORUS_OK;
}

int rdma_listener_create(const char *host, uint16_t port, rdma_listener **out) {
    struct sockaddr_storage address;
    int status = resolve(host, port, &address);
    if (status != CHORUS_OK) return status;
    rdma_listener *l = calloc(1, sizeof *l);
    if (l == NULL) return CHORUS_ERR_SYSTEM;
    if ((l->events = V.create_event_channel()) == NULL || set_nonblocking(l->events->fd) != 0 ||
        V.create_id(l->events, &l->id, NULL, RDMA_PS_TCP) != 0 || V.bind_addr(l->id, (struct sockaddr *)&address) != 0 ||
        V.listen(l->id, 64) != 0) {
        rdma_listener_destroy(l);
        return CHORUS_ERR_ADDRESS;
    }
    *out = l;
    return CHORUS_OK;
}

int rdma_listener_fd(const rdma_listener *l) { return l->events->fd; }

void rdma_listener_destroy(rdma_listener *l) {
    if (l == NULL) return;
    if (l->id != NULL) V.destroy_id(l->id);
    if (l->events != NULL) V.destroy_event_channel(l->events);
    free(l);
}

int rdma_listener_take(rdma_listener *listener, rdma_link **out, uint16_t *tcp_port, char peer[64]) {
    for (;;) {
        struct rdma_cm_event *event;
        if (V.get_cm_event(listener->events, &event) != 0) return 0; // none waiting (the channel is non-blocking)
        if (event->event != RDMA_CM_EVENT_CONNECT_REQUEST) {
            V.ack_cm_event(event);
            continue;
        }
        struct rdma_cm_id *id = event->id;
        link_hello hello = {0};
        if (event->param.conn.private_data != NULL && event->param.conn.private_data_len >= sizeof hello)
            memcpy(&hello, event->param.conn.private_data, sizeof hello);
        V.ack_cm_event(event);
        struct sockaddr *from = rdma_get_peer_addr(id);
        const void *raw = from->sa_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)from)->sin6_addr
                                                       : (const void *)&((struct sockaddr_in *)from)->sin_addr;
        inet_ntop(from->sa_family, raw, peer, 64);
        rdma_link *l = calloc(1, sizeof *l);
        if (l == NULL || hello.magic != CHORUS_FRAME_MAGIC) {
            V.reject(id, NULL, 0);
            V.destroy_id(id);
            free(l);
            continue;
        }
        l->id = id;
        if ((l->events = V.create_event_channel()) == NULL || set_nonblocking(l->events->fd) != 0 ||
            V.migrate_id(id, l->events) != 0 || setup_resources(l) != CHORUS_OK) {
            V.reject(id, NULL, 0);
            rdma_link_destroy(l);
            continue;
        }
        *tcp_port = hello.tcp_port;
        *out = l;
        return 1;
    }
}

chorus_failure rdma_link_accept(rdma_link *l) {
    struct rdma_conn_param param = {.retry_count = 7, .rnr_retry_count = 7};
    return V.accept(l->id, &param) == 0 ? chorus_no_failure() : chorus_system_failure("rdma_accept", errno);
}

void rdma_link_reject(rdma_link *l) { V.reject(l->id, NULL, 0); }

int rdma_link_cq_fd(const rdma_link *l) { return l->completions->fd; }
int rdma_link_cm_fd(const rdma_link *l) { return l->events->fd; }
int rdma_link_established(const rdma_link *l) { return l->established; }

int rdma_link_cm_events(rdma_link *l) {
    struct rdma_cm_event *event;
    int status = CHORUS_OK;
    while (V.get_cm_event(l->events, &event) == 0) {
        switch (event->event) {
        case RDMA_CM_EVENT_ESTABLISHED: l->established = 1; break;
        case RDMA_CM_EVENT_DISCONNECTED: case RDMA_CM_EVENT_DEVICE_REMOVAL: case RDMA_CM_EVENT_CONNECT_ERROR:
        case RDMA_CM_EVENT_UNREACHABLE: case RDMA_CM_EVENT_REJECTED:
            status = CHORUS_ERR_PEER_CLOSED;
            break;
        default: break;
        }
        V.ack_cm_event(event);
    }
    return status;
}

chorus_failure rdma_link_poll(rdma_link *l, rdma_completion_fn on_completion, void *context) {
    struct ibv_cq *cq;
    void *ignored;
    while (V.get_cq_event(l->completions, &cq, &ignored) == 0) V.ack_cq_events(cq, 1);
    int error = ibv_req_notify_cq(l->cq, 0); // returns an errno value
    if (error != 0) return chorus_system_failure("ibv_req_notify_cq", error);
    struct ibv_wc wc[16];
    int n;
    while ((n = ibv_poll_cq(l->cq, 16, wc)) > 0) {
        for (int i = 0; i < n; i++) {
            if (wc[i].status != IBV_WC_SUCCESS) return chorus_failure_of(CHORUS_ERR_PEER_CLOSED); // the QP went to error
            on_completion(context, (int)(wc[i].wr_id >> 16), (int)(wc[i].wr_id & 0xFFFF), wc[i].byte_len);
        }
    }
    return n < 0 ? chorus_system_failure("ibv_poll_cq", errno) : chorus_no_failure();
}

/// A failed post: our credits and slots never overfill the queue, so the QP is in error and the
/// link is gone (the peer's close, as a failed completion would say); errno and the call are kept.
static chorus_failure post_failure(const char *call, int error) {
    return (chorus_failure){CHORUS_ERR_PEER_CLOSED, error, call};
}

uint8_t *rdma_link_send_slot(rdma_link *l, int slot) { return l->memory + (size_t)slot * CHORUS_RDMA_SLOT_BYTES; }

const uint8_t *rdma_link_recv_slot(rdma_link *l, int slot) {
    return l->memory + (size_t)(CHORUS_RDMA_SLOTS + slot) * CHORUS_RDMA_SLOT_BYTES;
}

chorus_failure rdma_link_post_send(rdma_link *l, int slot, uint32_t bytes) {
    struct ibv_sge sge = {.addr = (uintptr_t)rdma_link_send_slot(l, slot), .length = bytes, .lkey = l->mr->lkey};
    struct ibv_send_wr wr = {.wr_id = (1u << 16) | (uint32_t)slot, .sg_list = &sge, .num_sge = 1,
                             .opcode = IBV_WR_SEND, .send_flags = IBV_SEND_SIGNALED}, *bad;
    int error = ibv_post_send(l->id->qp, &wr, &bad); // returns an errno value
    return error == 0 ? chorus_no_failure() : post_failure("ibv_post_send", error);
}

int rdma_link_registered_key(rdma_link *l, const void *address, size_t length, uint32_t *lkey) {
    if (__atomic_load_n(&registration_count, __ATOMIC_ACQUIRE) == 0) return 0; // no lock per chunk
    uintptr_t start = (uintptr_t)address;
    int found = 0;
    pthread_mutex_lock(&memory_lock);
    for (registration *r = registrations; r != NULL && !found; r = r->next) {
        if (start < r->base || start - r->base > r->length || length > r->length - (start - r->base)) continue;
        if (r->regions[l->pd_index] == NULL)
            r->regions[l->pd_index] = V.reg_mr(l->pd, (void *)r->base, r->length, IBV_ACCESS_LOCAL_WRITE);
        if (r->regions[l->pd_index] != NULL) {
            *lkey = r->regions[l->pd_index]->lkey;
            found = 1;
        }
    }
    pthread_mutex_unlock(&memory_lock);
    return found;
}

chorus_failure rdma_link_post_send_gather(rdma_link *l, int slot, const void *payload, uint32_t bytes, uint32_t lkey) {
    struct ibv_sge sge[2] = {
        {.addr = (uintptr_t)rdma_link_send_slot(l, slot), .length = CHORUS_RDMA_MESSAGE_HEADER, .lkey = l->mr->lkey},
        {.addr = (uintptr_t)payload, .length = bytes, .lkey = lkey},
    };
    struct ibv_send_wr wr = {.wr_id = (1u << 16) | (uint32_t)slot, .sg_list = sge, .num_sge = 2,
                             .opcode = IBV_WR_SEND, .send_flags = IBV_SEND_SIGNALED}, *bad;
    int error = ibv_post_send(l->id->qp, &wr, &bad); // returns an errno value
    return error == 0 ? chorus_no_failure() : post_failure("ibv_post_send", error);
}

chorus_failure rdma_link_post_recv(rdma_link *l, int slot) {
    struct ibv_sge sge = {.addr = (uintptr_t)rdma_link_recv_slot(l, slot), .length = CHORUS_RDMA_SLOT_BYTES, .lkey = l->mr->lkey};
    struct ibv_recv_wr wr = {.wr_id = (uint32_t)slot, .sg_list = &sge, .num_sge = 1}, *bad;
    int error = ibv_post_recv(l->id->qp, &wr, &bad); // returns an errno value
    return error == 0 ? chorus_no_failure() : post_failure("ibv_post_recv", error);
}
#else // !CHORUS_HAVE_RDMA_HEADERS

// A build made without the verbs and rdma_cm headers: RDMA is unavailable, with the reason, so
// `.auto` falls back to TCP and `.rdma` fails with a clear error; the RDMA data path is left out
// (data_paths.c).
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

#endif // CHORUS_HAVE_RDMA_HEADERS
