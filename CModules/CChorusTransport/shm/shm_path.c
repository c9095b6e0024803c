// The shared-memory data path, for peers on one host: data frames travel through two rings (one per
// direction) in a segment of shared memory, and the stream socket carries control frames, liveness
// and doorbells as on every connection.
//
// Terms:
// - segment: a POSIX shared-memory object the dialer creates at connect time (a random name, mode
//   0600), offers on the stream (SHM_OFFER: the name travels in the frame's tag, epoch and op_id),
//   and the acceptor maps and unlinks, answering SHM_ANSWER 1; an acceptor that cannot open it (its
//   peer is on another host) answers 0, and both ends then keep their data on the stream, exactly as
//   the TCP path does. The dialer waits for the answer within its connect deadline, so each end's
//   choice is made before any data frame: nothing is ever reordered between stream and ring;
// - ring: `head` (bytes the reader consumed) and `tail` (bytes the writer published) grow without
//   bound; a record is a 64-byte header (the data frame's 32-byte header, the chunk's offset and
//   length) and the chunk, padded to 64 bytes, never split at the ring's end (a pad marker skips it);
//   a frame longer than a chunk travels as several records, as over RDMA;
// - doorbell: a reader that finds its ring empty says so (`reader_waiting`) and a writer that finds it
//   full says so (`writer_waiting`); the other side, after publishing (consuming), takes the flag and,
//   if it was set, sends an empty SHM_DOORBELL frame on the stream. The owner's wait reads that socket
//   itself, so a waiting peer is woken exactly as by a TCP frame, and nothing spins. (An eventfd would
//   have to cross processes over a Unix socket; a futex cannot join the engine's epoll set.)
//
// Cost per chunk: the writer copies it into the ring and the reader copies it out (the TCP path's two
// copies, without the kernel's per-packet work); one doorbell per ring that ran dry.
//
// Everything read from the ring is checked before it is used (the peer could write anything there):
// the published count, the record's header (as a frame), its offset and length; a record is copied
// out of shared memory once and validated in the copy. Locking: the path's lock, then engine->lock;
// frames go on the stream only after the path's lock is released.
#define _GNU_SOURCE
#include "../tcp/tcp_path.h"
#include "../wire/wire.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define RING_BYTES (2u << 20)     // per direction; a power of two
#define CHUNK_BYTES (512u << 10)  // the largest chunk of one record
#define RECORD_HEADER 64u         // frame header, offset, length, padding: chunks stay 64-byte aligned
#define PAD_MARKER 0xFFFFFFFFu    // a record's first word: the rest of the ring up to its end is skipped
#define SEGMENT_MAGIC 0x4d485343u // "CSHM" read as little-endian bytes
#define SEGMENT_VERSION 1u

typedef struct ring {
    _Alignas(64) uint64_t head;           // the reader's
    _Alignas(64) uint64_t tail;           // the writer's
    _Alignas(64) uint32_t reader_waiting; // the reader found the ring empty: a doorbell after the next record
    _Alignas(64) uint32_t writer_waiting; // the writer found the ring full: a doorbell after the next consume
    _Alignas(64) uint8_t data[RING_BYTES];
} ring;

typedef struct segment {
    uint32_t magic, version;
    ring rings[2]; // [0] dialer to acceptor, [1] acceptor to dialer
} segment;

typedef enum { UNDECIDED, RINGS, STREAM } shm_mode;

typedef struct shm_state {
    pthread_mutex_t lock; // everything below but what says otherwise
    int dialer;
    shm_mode mode;        // set once; the dialer's before its connect returns, the acceptor's at the offer
    char name[64];        // the dialer's segment until it is unlinked ("" then)
    segment *segment;
    ring *out, *in;
    chorus_request *send_head, *send_tail; // data sends waiting for room in `out`
    uint32_t send_offset;                  // bytes of the head already written
    chorus_request *active;                // engine->lock: the receive being filled from records
    uint32_t recv_offset;                  // of the frame being received into `active`
    send_item doorbell;                    // send_lock: reused, never freed
    int doorbell_queued;                   // send_lock
} shm_state;

static shm_state *state_of(const conn *c) { return c->path_state; }

static uint32_t padded(uint32_t bytes) { return (bytes + 63u) & ~63u; }

// MARK: - Frames on the stream (no path lock held)

static void doorbell_written(chorus_engine *e, conn *c, send_item *item) {
    (void)e, (void)item;
    state_of(c)->doorbell_queued = 0;
}

/// Wakes the other end: one doorbell in the stream's queue at a time (a later one would say no more).
static void ring_doorbell(chorus_engine *e, conn *c) {
    shm_state *s = state_of(c);
    pthread_mutex_lock(&c->send_lock);
    int submit = !s->doorbell_queued;
    if (submit) {
        s->doorbell_queued = 1;
        s->doorbell.header_sent = 0;
    }
    pthread_mutex_unlock(&c->send_lock);
    if (submit) engine_submit(e, c, &s->doorbell);
}

// MARK: - Life cycle

static chorus_failure shm_open_state(chorus_engine *e, conn *c) {
    (void)e;
    shm_state *s = calloc(1, sizeof *s);
    if (s == NULL) return chorus_system_failure("calloc", ENOMEM);
    pthread_mutex_init(&s->lock, NULL);
    chorus_frame_header bell = {.type = CHORUS_FRAME_SHM_DOORBELL};
    chorus_frame_encode(&bell, s->doorbell.header);
    s->doorbell.written = doorbell_written;
    c->path_state = s;
    return chorus_no_failure();
}

static void unmap(shm_state *s) {
    if (s->segment != NULL) munmap(s->segment, sizeof *s->segment);
    s->segment = NULL;
    s->out = s->in = NULL;
    if (s->name[0] != 0) shm_unlink(s->name); // the dialer's, if the acceptor never took it
    s->name[0] = 0;
}

static void shm_release(conn *c) {
    shm_state *s = state_of(c);
    if (s == NULL) return;
    unmap(s);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static void shm_teardown(chorus_engine *e, conn *c, int request_status) {
    shm_state *s = state_of(c);
    if (s == NULL) return; // a listener
    pthread_mutex_lock(&s->lock);
    pthread_mutex_lock(&e->lock);
    engine_complete_all_locked(e, &s->send_head, &s->send_tail, request_status);
    if (s->active != NULL) engine_complete_locked(e, s->active, request_status);
    s->active = NULL;
    pthread_mutex_unlock(&e->lock);
    unmap(s);
    pthread_mutex_unlock(&s->lock);
}

// MARK: - Writing records

/// Writes what room in `out` allows. Returns 1 when the reader must be woken.
static int write_records_locked(chorus_engine *e, shm_state *s) {
    ring *out = s->out;
    int wake = 0;
    uint64_t tail = out->tail; // ours alone
    while (s->send_head != NULL) {
        chorus_request *r = s->send_head;
        uint32_t chunk = r->item.length - s->send_offset;
        if (chunk > CHUNK_BYTES) chunk = CHUNK_BYTES;
        uint32_t record = RECORD_HEADER + padded(chunk);
        uint32_t at = (uint32_t)(tail % RING_BYTES), to_end = RING_BYTES - at;
        uint32_t needed = record <= to_end ? record : to_end + record; // a pad first when it does not fit
        uint64_t used = tail - __atomic_load_n(&out->head, __ATOMIC_ACQUIRE);
        if (RING_BYTES - used < needed) {
            // Full: ask for a doorbell, then look again (the reader may have consumed meanwhile).
            __atomic_store_n(&out->writer_waiting, 1, __ATOMIC_SEQ_CST);
            used = tail - __atomic_load_n(&out->head, __ATOMIC_SEQ_CST);
            if (RING_BYTES - used < needed) break;
            __atomic_store_n(&out->writer_waiting, 0, __ATOMIC_RELAXED);
        }
        if (record > to_end) {
            chorus_put_u32(out->data + at, PAD_MARKER);
            tail += to_end;
            at = 0;
        }
        uint8_t *slot = out->data + at;
        memcpy(slot, r->item.header, CHORUS_FRAME_HEADER_BYTES);
        chorus_put_u32(slot + CHORUS_FRAME_HEADER_BYTES, s->send_offset);
        chorus_put_u32(slot + CHORUS_FRAME_HEADER_BYTES + 4, chunk);
        if (chunk > 0) memcpy(slot + RECORD_HEADER, r->item.payload + s->send_offset, chunk);
        tail += record;
        __atomic_store_n(&out->tail, tail, __ATOMIC_SEQ_CST);
        if (__atomic_exchange_n(&out->reader_waiting, 0, __ATOMIC_SEQ_CST)) wake = 1;
        s->send_offset += chunk;
        if (s->send_offset == r->item.length) { // copied: the caller's buffer is free again
            s->send_head = r->next;
            if (s->send_head == NULL) s->send_tail = NULL;
            s->send_offset = 0;
            pthread_mutex_lock(&e->lock);
            engine_complete_locked(e, r, CHORUS_OK);
            pthread_mutex_unlock(&e->lock);
        }
    }
    return wake;
}

static void flush_sends(chorus_engine *e, conn *c) {
    shm_state *s = state_of(c);
    pthread_mutex_lock(&s->lock);
    int wake = s->out != NULL && write_records_locked(e, s);
    pthread_mutex_unlock(&s->lock);
    if (wake) ring_doorbell(e, c);
}

static chorus_failure shm_post_send(chorus_engine *e, conn *c, chorus_request *r) {
    shm_state *s = state_of(c);
    pthread_mutex_lock(&s->lock);
    shm_mode mode = s->mode;
    // Checked under the path's lock: engine_fail_conn marks the connection failed before its
    // teardown takes that lock to fail the queue, so a send either sees the failure or is failed by it.
    int failed = mode == RINGS && engine_conn_failed(e, c);
    if (mode == RINGS && !failed) {
        r->next = NULL;
        if (s->send_tail) s->send_tail->next = r; else s->send_head = r;
        s->send_tail = r;
    }
    pthread_mutex_unlock(&s->lock);
    if (mode != RINGS) return tcp_post_send(e, c, r);
    if (failed) return chorus_failure_of(CHORUS_ERR_NO_SUCH_CONNECTION);
    flush_sends(e, c);
    return chorus_no_failure();
}

// MARK: - Reading records

/// What read_record did.
enum { READ_ONE = 0, RING_EMPTY = 1, WAITS_FOR_RECEIVE = 2 };

/// Consumes the record at `in`'s head into the receive it continues or the head posted one. Caller
/// holds the path's lock. Returns READ_ONE, RING_EMPTY, WAITS_FOR_RECEIVE, or a status that fails
/// the connection.
static int read_record_locked(chorus_engine *e, conn *c, int *wake_writer) {
    shm_state *s = state_of(c);
    ring *in = s->in;
    uint64_t head = in->head; // ours alone
    uint64_t available = __atomic_load_n(&in->tail, __ATOMIC_ACQUIRE) - head;
    if (available == 0) {
        __atomic_store_n(&in->reader_waiting, 1, __ATOMIC_SEQ_CST); // then look again: the writer may just have published
        available = __atomic_load_n(&in->tail, __ATOMIC_SEQ_CST) - head;
        if (available == 0) return RING_EMPTY;
        __atomic_store_n(&in->reader_waiting, 0, __ATOMIC_RELAXED);
    }
    if (available > RING_BYTES) return CHORUS_ERR_OUT_OF_SEQUENCE; // a writer cannot have published that much
    uint32_t at = (uint32_t)(head % RING_BYTES), to_end = RING_BYTES - at;
    uint8_t raw[RECORD_HEADER];
    if (available < sizeof raw) return CHORUS_ERR_OUT_OF_SEQUENCE;
    memcpy(raw, in->data + at, sizeof raw); // validated in our copy: the peer may write the ring meanwhile
    if (chorus_get_u32(raw) == PAD_MARKER) {
        if (available < to_end) return CHORUS_ERR_OUT_OF_SEQUENCE;
        __atomic_store_n(&in->head, head + to_end, __ATOMIC_SEQ_CST);
        return READ_ONE;
    }
    chorus_frame_header h;
    int status = chorus_frame_decode(raw, 0, &h);
    if (status != CHORUS_OK) return status;
    if (h.type != CHORUS_FRAME_DATA) return CHORUS_ERR_UNEXPECTED_CONTROL;
    uint32_t offset = chorus_get_u32(raw + CHORUS_FRAME_HEADER_BYTES), chunk = chorus_get_u32(raw + CHORUS_FRAME_HEADER_BYTES + 4);
    if (chunk > CHUNK_BYTES || offset > h.length || chunk > h.length - offset) return CHORUS_ERR_BAD_LENGTH;
    uint32_t record = RECORD_HEADER + padded(chunk);
    if (record > available || record > to_end) return CHORUS_ERR_OUT_OF_SEQUENCE;
    status = engine_receive_chunk(e, c, &s->active, &s->recv_offset, &h, offset, in->data + at + RECORD_HEADER, chunk);
    if (status == CHORUS_PATH_WAIT) return WAITS_FOR_RECEIVE;
    if (status != CHORUS_OK) return status;
    __atomic_store_n(&in->head, head + record, __ATOMIC_SEQ_CST);
    if (__atomic_exchange_n(&in->writer_waiting, 0, __ATOMIC_SEQ_CST)) *wake_writer = 1;
    return READ_ONE;
}

/// Reads records until the ring is empty or one waits for a receive (io_lock held).
static chorus_failure consume(chorus_engine *e, conn *c) {
    shm_state *s = state_of(c);
    int status = READ_ONE, wake_writer = 0;
    pthread_mutex_lock(&s->lock);
    while (s->in != NULL && (status = read_record_locked(e, c, &wake_writer)) == READ_ONE) {}
    pthread_mutex_unlock(&s->lock);
    if (wake_writer) ring_doorbell(e, c);
    return status == RING_EMPTY || status == WAITS_FOR_RECEIVE || status == READ_ONE ? chorus_no_failure() : chorus_failure_of(status);
}

static int shm_stream_data(chorus_engine *e, conn *c) {
    shm_state *s = state_of(c);
    pthread_mutex_lock(&s->lock);
    shm_mode mode = s->mode;
    pthread_mutex_unlock(&s->lock);
    return mode == RINGS ? CHORUS_ERR_UNEXPECTED_DATA : tcp_stream_data(e, c); // data travels in the rings once agreed
}

static chorus_failure shm_resume(chorus_engine *e, conn *c) {
    shm_state *s = state_of(c);
    pthread_mutex_lock(&s->lock);
    shm_mode mode = s->mode;
    pthread_mutex_unlock(&s->lock);
    return mode == RINGS ? consume(e, c) : tcp_resume(e, c);
}

// MARK: - The offer

/// Maps the segment, checks its size and its header, and sets up the rings of one end.
static int map_segment(shm_state *s, int fd, int dialer) {
    struct stat info;
    if (fstat(fd, &info) != 0 || (size_t)info.st_size != sizeof(segment)) return CHORUS_ERR_SYSTEM;
    segment *mapped = mmap(NULL, sizeof(segment), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mapped == MAP_FAILED) return CHORUS_ERR_SYSTEM;
    s->segment = mapped;
    s->out = &mapped->rings[dialer ? 0 : 1];
    s->in = &mapped->rings[dialer ? 1 : 0];
    return CHORUS_OK;
}

static void segment_name(char name[64], uint32_t tag, uint64_t epoch, uint64_t op_id) {
    snprintf(name, 64, "/chorus-%08x%016llx%016llx", tag, (unsigned long long)epoch, (unsigned long long)op_id);
}

/// The acceptor's side: map the offered segment if it is on this host, unlink it, answer.
static chorus_failure take_offer(chorus_engine *e, conn *c, const chorus_frame_header *h) {
    shm_state *s = state_of(c);
    pthread_mutex_lock(&s->lock);
    int again = s->dialer || s->mode != UNDECIDED;
    int accepted = 0;
    if (!again) {
        char name[64];
        segment_name(name, h->tag, h->epoch, h->op_id);
        int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
        if (fd >= 0) {
            shm_unlink(name); // mapped from now on, so nothing is left behind whoever dies
            accepted = map_segment(s, fd, 0) == CHORUS_OK && s->segment->magic == SEGMENT_MAGIC &&
                       s->segment->version == SEGMENT_VERSION;
            close(fd);
            if (!accepted) unmap(s);
        }
        s->mode = accepted ? RINGS : STREAM; // not on this host (or not ours): the stream carries the data
    }
    pthread_mutex_unlock(&s->lock);
    if (again) return chorus_failure_of(CHORUS_ERR_UNEXPECTED_CONTROL); // one offer, and only to an acceptor
    chorus_frame_header answer = {.type = CHORUS_FRAME_SHM_ANSWER, .tag = (uint32_t)accepted};
    engine_send_signal(e, c, &answer);
    return chorus_no_failure();
}

/// The dialer's side: the acceptor mapped the segment (or could not).
static chorus_failure take_answer(conn *c, const chorus_frame_header *h) {
    shm_state *s = state_of(c);
    pthread_mutex_lock(&s->lock);
    int valid = s->dialer && s->mode == UNDECIDED && h->tag <= 1;
    if (valid && h->tag == 1) { // mapped at both ends: the name is gone already (the acceptor unlinked it)
        s->mode = RINGS;
        s->name[0] = 0;
    } else if (valid) {
        s->mode = STREAM;
        unmap(s); // and unlinks it: the acceptor will never open it
    }
    pthread_mutex_unlock(&s->lock);
    return valid ? chorus_no_failure() : chorus_failure_of(CHORUS_ERR_UNEXPECTED_CONTROL);
}

static chorus_failure shm_stream_frame(chorus_engine *e, conn *c, const chorus_frame_header *h) {
    switch (h->type) {
    case CHORUS_FRAME_SHM_OFFER: return take_offer(e, c, h);
    case CHORUS_FRAME_SHM_ANSWER: return take_answer(c, h);
    case CHORUS_FRAME_SHM_DOORBELL: {
        if (!engine_data_allowed(e, c)) return chorus_failure_of(CHORUS_ERR_UNEXPECTED_DATA);
        chorus_failure failure = consume(e, c);
        if (failure.status == CHORUS_OK) flush_sends(e, c);
        return failure;
    }
    default: return chorus_failure_of(CHORUS_ERR_UNEXPECTED_CONTROL);
    }
}

/// Creates the segment, offers it, and waits for the answer within the connect deadline (serving
/// the engine meanwhile, so the answer is read whichever thread reads it).
static chorus_failure shm_dial(chorus_engine *e, conn *c, const char *host, uint16_t port, uint64_t deadline_ms) {
    (void)host, (void)port;
    shm_state *s = state_of(c);
    uint8_t random[20];
    if (getrandom(random, sizeof random, 0) != (ssize_t)sizeof random) return chorus_system_failure("getrandom", errno);
    uint32_t tag = chorus_get_u32(random);
    uint64_t epoch = chorus_get_u64(random + 4), op_id = chorus_get_u64(random + 12);
    pthread_mutex_lock(&s->lock);
    s->dialer = 1;
    segment_name(s->name, tag, epoch, op_id);
    int fd = shm_open(s->name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    int error = fd < 0 ? errno : 0;
    if (fd >= 0 && ftruncate(fd, sizeof(segment)) != 0) error = errno;
    if (fd >= 0 && error == 0 && map_segment(s, fd, 1) != CHORUS_OK) error = errno != 0 ? errno : ENOMEM;
    if (fd >= 0) close(fd);
    if (error == 0) {
        s->segment->magic = SEGMENT_MAGIC;
        s->segment->version = SEGMENT_VERSION;
        for (int i = 0; i < 2; i++) s->segment->rings[i].reader_waiting = 1; // nobody has read yet
    } else {
        s->mode = STREAM; // no shared memory here: the stream carries the data, and no offer is made
        unmap(s);
    }
    pthread_mutex_unlock(&s->lock);
    if (error != 0) return chorus_no_failure();
    chorus_frame_header offer = {.type = CHORUS_FRAME_SHM_OFFER, .tag = tag, .epoch = epoch, .op_id = op_id};
    int status = engine_send_signal(e, c, &offer);
    if (status != CHORUS_OK) return chorus_failure_of(status);
    for (;;) {
        pthread_mutex_lock(&s->lock);
        shm_mode mode = s->mode;
        pthread_mutex_unlock(&s->lock);
        if (mode != UNDECIDED) return chorus_no_failure();
        if (engine_conn_failed(e, c)) return engine_conn_failure(e, c); // closed or failed during the offer: its cause
        uint64_t now = chorus_now_ms();
        if (now >= deadline_ms) return chorus_failure_of(CHORUS_ERR_CONNECT_FAILED); // the acceptor never answered
        engine_progress(e, deadline_ms - now < 5 ? (int)(deadline_ms - now) : 5);
    }
}

const chorus_data_path chorus_shm_path = {
    .open = shm_open_state,
    .release = shm_release,
    .dial = shm_dial,
    .post_send = shm_post_send,
    .stream_data = shm_stream_data,
    .stream_frame = shm_stream_frame,
    .resume = shm_resume,
    .teardown = shm_teardown,
};
