// Who drives the engine, and how callers wait in it.
//
// Readiness on the engine's connections is served by whichever thread is there to serve it. A caller
// waiting in the engine (for a request or an event) harvests the epoll set itself, so the frame it
// waits for is read by the thread that wants it, with no hop through another thread: after an idle
// gap every hop is a sleeping thread's wake-up, which costs tens of microseconds on a VM. While
// callers wait, the I/O thread stands aside (it would only race them for the same readiness, and
// take a core); it serves what arrives while nobody waits (heartbeats, accepts, the rest of a send
// the socket could not take, receives posted before the owner went off to compute), and it runs the
// timers. Waits spin briefly (serving the engine, yielding the core) before they block in poll on the
// epoll set and the caller's own eventfd, which completions and events write when callers sleep.
#define _GNU_SOURCE
#include "engine.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

/// A caller blocked in poll, woken through its eventfd.
typedef struct sleeper {
    struct sleeper *next;
    int fd;
    int woken; // engine->lock: its eventfd was written
} sleeper;

// MARK: - Waking

static void signal_fd(int fd) {
    uint64_t one = 1;
    ssize_t ignored = write(fd, &one, sizeof one);
    (void)ignored;
}

static void drain_fd(int fd) {
    uint64_t count;
    ssize_t ignored = read(fd, &count, sizeof count);
    (void)ignored;
}

// Each thread's eventfd, made at its first blocking wait and closed when the thread exits (stored
// plus one, so that 0 means "none yet").
static pthread_key_t wake_fd_key;
static pthread_once_t wake_fd_once = PTHREAD_ONCE_INIT;

static void close_wake_fd(void *stored) { close((int)((intptr_t)stored - 1)); }
static void make_wake_fd_key(void) { pthread_key_create(&wake_fd_key, close_wake_fd); }

static int thread_wake_fd(void) {
    pthread_once(&wake_fd_once, make_wake_fd_key);
    intptr_t stored = (intptr_t)pthread_getspecific(wake_fd_key);
    if (stored != 0) return (int)(stored - 1);
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd >= 0 && pthread_setspecific(wake_fd_key, (void *)(intptr_t)(fd + 1)) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static void wake_sleepers_locked(chorus_engine *e) {
    for (sleeper *s = e->sleepers; s != NULL; s = s->next) {
        if (s->woken) continue;
        s->woken = 1;
        signal_fd(s->fd);
    }
}

void engine_complete_locked(chorus_engine *e, chorus_request *r, int status) {
    if (r->done) return;
    r->status = status;
    __atomic_store_n(&r->done, 1, __ATOMIC_RELEASE); // also read without the lock while spinning
    __atomic_sub_fetch(&e->in_flight, 1, __ATOMIC_SEQ_CST);
    wake_sleepers_locked(e);
}

void engine_complete_all_locked(chorus_engine *e, chorus_request **head, chorus_request **tail, int status) {
    for (chorus_request *r = *head; r != NULL;) {
        chorus_request *next = r->next; // completion may let the owner free it
        engine_complete_locked(e, r, status);
        r = next;
    }
    *head = *tail = NULL;
}

void engine_push_event_locked(chorus_engine *e, event_node *node) {
    node->next = NULL;
    if (e->event_tail) e->event_tail->next = node; else e->event_head = node;
    e->event_tail = node;
    __atomic_store_n(&e->event_count, e->event_count + 1, __ATOMIC_RELEASE);
    wake_sleepers_locked(e);
}

// MARK: - Spinning

// A sched_yield with nothing else to run returns within microseconds; one that kept us off the core
// for a time slice handed it to other runnable work (a busy process on our cores).
#define CONTENDED_YIELD_US 1000
// ...and while that lasts every yield hands over a whole slice, which costs a small collective ten
// times its time; so spinning stops (waits block at once, and a woken thread is scheduled promptly)
// for a pause that doubles while yields keep finding the core taken, from 5 ms up to a second, and
// ends at the first yield that finds it free.
#define SPIN_PAUSE_MIN_US 5000
#define SPIN_PAUSE_MAX_US 1000000

static int may_spin(chorus_engine *e, uint64_t now_us) {
    return now_us >= __atomic_load_n(&e->spin_resumes_us, __ATOMIC_RELAXED);
}

/// Yields the core for one round of a spin, and pauses spinning if the core was taken.
static void spin_yield(chorus_engine *e) {
    uint64_t before = chorus_now_us();
    sched_yield();
    uint64_t after = chorus_now_us();
    // Threads of one engine race on these two only to lengthen or shorten one pause.
    uint64_t pause = __atomic_load_n(&e->spin_pause_us, __ATOMIC_RELAXED);
    if (after - before > CONTENDED_YIELD_US) {
        pause = pause == 0 ? SPIN_PAUSE_MIN_US : pause * 2 > SPIN_PAUSE_MAX_US ? SPIN_PAUSE_MAX_US : pause * 2;
        __atomic_store_n(&e->spin_pause_us, pause, __ATOMIC_RELAXED);
        __atomic_store_n(&e->spin_resumes_us, after + pause, __ATOMIC_RELAXED);
    } else if (pause != 0) {
        __atomic_store_n(&e->spin_pause_us, 0, __ATOMIC_RELAXED);
    }
}

// MARK: - Serving connections

void engine_serve(chorus_engine *e, conn *c, uint32_t work) {
    __atomic_fetch_or(&c->io_work, work, __ATOMIC_SEQ_CST);
    do {
        // A holder that fails the trylock's race still finds the work: it reads io_work after it
        // unlocks, and the bits were set before this trylock.
        if (pthread_mutex_trylock(&c->io_lock) != 0) return;
        uint32_t taken;
        while ((taken = __atomic_exchange_n(&c->io_work, 0, __ATOMIC_SEQ_CST)) != 0) engine_do_work(e, c, taken);
        pthread_mutex_unlock(&c->io_lock);
    } while (__atomic_load_n(&c->io_work, __ATOMIC_SEQ_CST) != 0);
}

/// Serves connections flagged for attention (receives posted on paused ones).
static void serve_flagged(chorus_engine *e) {
    // Looked at on every round of a waiting caller's spin: peek before taking the lock (a flag set
    // just after is seen on the next round, under the lock).
    if (!__atomic_load_n(&e->attention, __ATOMIC_ACQUIRE)) return;
    for (;;) {
        conn *batch[32];
        size_t n = 0;
        pthread_mutex_lock(&e->lock);
        if (!e->attention) {
            pthread_mutex_unlock(&e->lock);
            return;
        }
        __atomic_store_n(&e->attention, 0, __ATOMIC_RELEASE);
        for (size_t i = 0; i < e->conn_count; i++) {
            conn *c = e->conns[i];
            if (!c->needs_attention) continue;
            if (n == sizeof batch / sizeof batch[0]) {
                __atomic_store_n(&e->attention, 1, __ATOMIC_RELEASE); // the rest in the next round
                break;
            }
            c->needs_attention = 0;
            c->refs++;
            batch[n++] = c;
        }
        pthread_mutex_unlock(&e->lock);
        for (size_t i = 0; i < n; i++) {
            engine_serve(e, batch[i], IO_ATTENTION);
            engine_release(e, batch[i]);
        }
    }
}

int engine_progress(chorus_engine *e, int timeout_ms) {
    struct epoll_event events[64];
    int n = epoll_wait(e->epfd, events, 64, timeout_ms);
    for (int i = 0; i < n; i++) {
        uint64_t slot = events[i].data.u64 >> KEY_SLOT_SHIFT; // 0: the stream socket; s + 1: the path's slot s
        conn *c = engine_acquire(e, events[i].data.u64 & KEY_ID_MASK);
        if (c == NULL) continue;
        uint32_t work;
        if (slot > 0) work = 1u << (IO_PATH_SHIFT + slot - 1);
        else if (c->is_listener) work = IO_ACCEPT;
        else work = (events[i].events & EPOLLOUT ? IO_WRITE : 0u) |
                    (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR) ? IO_READ : 0u) |
                    (events[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR) ? IO_HANGUP : 0u);
        engine_serve(e, c, work);
        engine_release(e, c);
    }
    serve_flagged(e);
    return n > 0 ? n : 0;
}

static void serve_all_timers(chorus_engine *e) {
    pthread_mutex_lock(&e->lock);
    size_t count = e->conn_count;
    conn **all = malloc(count * sizeof *all + 1);
    for (size_t i = 0; all != NULL && i < count; i++) {
        all[i] = e->conns[i];
        all[i]->refs++;
    }
    pthread_mutex_unlock(&e->lock);
    if (all == NULL) return; // at the next tick
    for (size_t i = 0; i < count; i++) {
        engine_serve(e, all[i], IO_TIMERS);
        engine_release(e, all[i]);
    }
    free(all);
}

// MARK: - The I/O thread

void engine_timers_due_by(chorus_engine *e, uint64_t due_ms) {
    uint64_t current = __atomic_load_n(&e->timers_due_ms, __ATOMIC_ACQUIRE);
    do {
        if (current != 0 && current <= due_ms) return;
    } while (!__atomic_compare_exchange_n(&e->timers_due_ms, &current, due_ms, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
    signal_fd(e->wakefd); // it sleeps until its tick: have it look at the earlier time
}

/// Serves what arrived, then every connection's timers.
static void run_timers(chorus_engine *e) {
    engine_progress(e, 0); // what arrived while nobody served it counts before the deadlines
    serve_all_timers(e);
}

/// The I/O thread's timer period: half a heartbeat interval, so a heartbeat leaves at most 1.5
/// intervals after the last send, which keeps the senders' rhythm (and hang suspicion's bar) short.
static uint32_t engine_tick_ms(const chorus_engine_config *config) {
    uint32_t tick = config->heartbeat_interval_ms / 2;
    if (config->idle_timeout_ms > 0 && (tick == 0 || config->idle_timeout_ms / 4 < tick)) tick = config->idle_timeout_ms / 4;
    return tick == 0 ? 1000 : tick;
}

int engine_held_up_within(chorus_engine *e, uint64_t now, uint64_t window_ms) {
    return now < __atomic_load_n(&e->held_up_ms, __ATOMIC_ACQUIRE) + window_ms;
}

static void *io_main(void *arg) {
    chorus_engine *e = arg;
    uint32_t tick = e->tick_ms;
    uint64_t next_timers = chorus_now_ms() + tick;
    uint64_t last_activity_us = 0;
    for (;;) {
        pthread_mutex_lock(&e->lock);
        int stopping = e->stopping;
        pthread_mutex_unlock(&e->lock);
        if (stopping) break;
        uint64_t now = chorus_now_ms();
        uint64_t due = __atomic_load_n(&e->timers_due_ms, __ATOMIC_ACQUIRE);
        if (due != 0 && now >= due) __atomic_compare_exchange_n(&e->timers_due_ms, &due, 0, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
        if (now >= next_timers) {
            // Late by more than a tick: this process was paused or starved (engine_held_up_within).
            if (now - next_timers > tick) __atomic_store_n(&e->held_up_ms, now, __ATOMIC_RELEASE);
            __atomic_store_n(&e->last_tick_ms, now, __ATOMIC_RELEASE);
            run_timers(e);
            next_timers = chorus_now_ms() + tick;
            continue;
        }
        if (due != 0 && now >= due) { // a probe's deadline, between ticks
            run_timers(e);
            continue;
        }
        uint64_t wake_at = due != 0 && due < next_timers ? due : next_timers;
        // Right after traffic, look (yielding the core) instead of sleeping: within a collective the
        // next frame usually follows within microseconds, and it lands while the owner computes.
        uint64_t now_us = chorus_now_us();
        if (e->config.spin_wait_us > 0 && now_us - last_activity_us < e->config.spin_wait_us && may_spin(e, now_us)) {
            if (engine_progress(e, 0) > 0) last_activity_us = chorus_now_us();
            else spin_yield(e);
            continue;
        }
        // Otherwise serve readiness only for requests in flight while nobody waits (the owner computing
        // between the steps of a collective): callers waiting serve it themselves, and anything else
        // (control frames, accepts, heartbeats) waits for the owner's next wait or this thread's next
        // tick, so an idle engine's thread is not woken (on a VM a wake-up costs the waker tens of
        // microseconds). The flag is set before looking, and a caller leaving a wait reads it after
        // lowering `pollers`, so one of the two sees the other.
        __atomic_store_n(&e->io_parked, 1, __ATOMIC_SEQ_CST);
        int background = __atomic_load_n(&e->pollers, __ATOMIC_SEQ_CST) == 0 && __atomic_load_n(&e->in_flight, __ATOMIC_SEQ_CST) > 0;
        if (background) __atomic_store_n(&e->io_parked, 0, __ATOMIC_SEQ_CST);
        struct pollfd fds[2] = {{.fd = e->wakefd, .events = POLLIN}, {.fd = e->epfd, .events = POLLIN}};
        int n = poll(fds, background ? 2 : 1, (int)(wake_at - now));
        __atomic_store_n(&e->io_parked, 0, __ATOMIC_SEQ_CST);
        if (n > 0 && (fds[0].revents & POLLIN)) {
            drain_fd(e->wakefd);
            last_activity_us = chorus_now_us(); // a caller left with requests in flight: the next frame is near
        }
        if (n > 0 && background && (fds[1].revents & POLLIN) && engine_progress(e, 0) > 0) last_activity_us = chorus_now_us();
    }
    return NULL;
}

// MARK: - Waiting

/// Waits until `ready` (checked with e->lock held) or `timeout_ms` passes, serving the engine
/// meanwhile. Returns 1 with e->lock held when ready, 0 (lock not held) at the timeout.
static int await_locked(chorus_engine *e, int (*ready)(chorus_engine *, void *), void *context, int timeout_ms) {
    uint64_t start = chorus_now_us();
    uint64_t deadline = start + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000u;
    int spin = timeout_ms > 0 && e->config.spin_wait_us > 0;
    int fd = thread_wake_fd();
    sleeper me = {.fd = fd};
    __atomic_add_fetch(&e->pollers, 1, __ATOMIC_SEQ_CST);
    int result;
    for (;;) {
        engine_progress(e, 0);
        pthread_mutex_lock(&e->lock);
        if (ready(e, context)) {
            result = 1;
            break;
        }
        uint64_t now = chorus_now_us();
        if (now >= deadline) {
            pthread_mutex_unlock(&e->lock);
            result = 0;
            break;
        }
        if (spin && now - start < e->config.spin_wait_us && may_spin(e, now)) {
            // A completion usually lands within microseconds, and a sleep and wake-up cost more.
            pthread_mutex_unlock(&e->lock);
            spin_yield(e);
            continue;
        }
        me.woken = 0;
        me.next = e->sleepers;
        e->sleepers = &me;
        pthread_mutex_unlock(&e->lock);
        int ms = (int)((deadline - now + 999) / 1000);
        if (fd < 0 && ms > 1) ms = 1; // no eventfd for this thread: look again every millisecond
        struct pollfd fds[2] = {{.fd = e->epfd, .events = POLLIN}, {.fd = fd, .events = POLLIN}};
        poll(fds, fd >= 0 ? 2 : 1, ms);
        pthread_mutex_lock(&e->lock);
        for (sleeper **link = &e->sleepers; *link != NULL; link = &(*link)->next) {
            if (*link == &me) {
                *link = me.next;
                break;
            }
        }
        int woken = me.woken;
        pthread_mutex_unlock(&e->lock);
        if (woken) drain_fd(fd);
    }
    if (__atomic_sub_fetch(&e->pollers, 1, __ATOMIC_SEQ_CST) == 0 && __atomic_load_n(&e->io_parked, __ATOMIC_SEQ_CST) &&
        __atomic_load_n(&e->in_flight, __ATOMIC_SEQ_CST) > 0)
        signal_fd(e->wakefd); // requests in flight make progress while the owner computes
    return result;
}

typedef struct request_wait {
    chorus_request *request;
    int interruptible;
} request_wait;

static int request_ready(chorus_engine *e, void *context) {
    request_wait *w = context;
    return w->request->done || (w->interruptible && e->event_count > 0);
}

int chorus_request_wait(chorus_engine *e, chorus_request *r, int timeout_ms, int interruptible) {
    request_wait w = {r, interruptible};
    if (__atomic_load_n(&r->done, __ATOMIC_ACQUIRE)) {
        pthread_mutex_lock(&e->lock); // done already (a send written inline): no look at the sockets
    } else if (!await_locked(e, request_ready, &w, timeout_ms)) {
        return CHORUS_ERR_TIMEDOUT;
    }
    if (!r->done) {
        pthread_mutex_unlock(&e->lock);
        return CHORUS_ERR_INTERRUPTED;
    }
    int status = r->status;
    pthread_mutex_unlock(&e->lock);
    free(r);
    return status;
}

int chorus_request_done(const chorus_request *r) { return __atomic_load_n(&r->done, __ATOMIC_ACQUIRE); }

static int event_ready(chorus_engine *e, void *context) {
    (void)context;
    return e->event_head != NULL;
}

int chorus_engine_next_event(chorus_engine *e, int timeout_ms, chorus_event *out) {
    if (!await_locked(e, event_ready, NULL, timeout_ms)) return CHORUS_ERR_TIMEDOUT;
    event_node *node = e->event_head;
    e->event_head = node->next;
    if (e->event_head == NULL) e->event_tail = NULL;
    if (node->event.kind == CHORUS_EVENT_CONTROL) e->control_bytes -= node->event.header.length;
    __atomic_store_n(&e->event_count, e->event_count - 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&e->lock);
    *out = node->event;
    free(node);
    return CHORUS_OK;
}

void chorus_event_release(chorus_event *event) {
    free(event->payload);
    event->payload = NULL;
}

// MARK: - Life cycle

int chorus_engine_create(const chorus_engine_config *config, chorus_engine **out) {
    if (config == NULL || out == NULL || config->max_queued_events == 0) return CHORUS_ERR_INVALID_ARGUMENT;
    chorus_engine *e = calloc(1, sizeof *e);
    if (e == NULL) return CHORUS_ERR_SYSTEM;
    e->config = *config;
    e->tick_ms = engine_tick_ms(config);
    e->last_tick_ms = chorus_now_ms();
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    e->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_mutex_init(&e->lock, NULL);
    if (e->epfd < 0 || e->wakefd < 0 || pthread_create(&e->thread, NULL, io_main, e) != 0) {
        if (e->epfd >= 0) close(e->epfd);
        if (e->wakefd >= 0) close(e->wakefd);
        pthread_mutex_destroy(&e->lock);
        free(e);
        return CHORUS_ERR_SYSTEM;
    }
    *out = e;
    return CHORUS_OK;
}

void chorus_engine_destroy(chorus_engine *e) {
    if (e == NULL) return;
    pthread_mutex_lock(&e->lock);
    e->stopping = 1;
    pthread_mutex_unlock(&e->lock);
    signal_fd(e->wakefd);
    pthread_join(e->thread, NULL);
    for (;;) {
        pthread_mutex_lock(&e->lock);
        conn *c = e->conn_count > 0 ? e->conns[0] : NULL;
        if (c != NULL) {
            c->owner_closed = 1;
            c->refs++;
        }
        pthread_mutex_unlock(&e->lock);
        if (c == NULL) break;
        // Frames sent for later leave before the close (a member's word that it committed its
        // last collective, which its partner in a pair may still be waiting for the master to hear).
        pthread_mutex_lock(&c->send_lock);
        stream_uncork_locked(e, c); // best effort: a failure here is the close's anyway
        pthread_mutex_unlock(&c->send_lock);
        pthread_mutex_lock(&c->io_lock);
        engine_fail_conn(e, c, chorus_failure_of(CHORUS_ERR_SHUTDOWN));
        pthread_mutex_unlock(&c->io_lock);
        engine_release(e, c);
    }
    for (event_node *node = e->event_head; node != NULL;) {
        event_node *next = node->next;
        chorus_event_release(&node->event);
        free(node);
        node = next;
    }
    free(e->conns);
    close(e->epfd);
    close(e->wakefd);
    pthread_mutex_destroy(&e->lock);
    free(e);
}
