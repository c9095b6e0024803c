// The operation fence (chorus_transport.h, chorus_engine_vouch): members vouch for an operation on
// their master connection before they tell each other they are done with it, and the master fences
// a member before it aborts an operation that member may still vouch for. The fenced engine answers
// from its own reader, so a member busy computing (nobody waiting in the engine) answers on the I/O
// thread's tick at the latest.
#include "engine.h"

#include <errno.h>
#include <stdlib.h>

/// True when `op` of `epoch` is at or after the fence, which forbids vouching for it (engine->lock).
static int fenced_locked(const conn *c, uint64_t epoch, uint64_t op) {
    return c->fence_op != 0 && c->fence_epoch == epoch && op >= c->fence_op;
}

/// True when this end has vouched for `op` of `epoch` or a later operation of it (engine->lock).
static int vouched_locked(const conn *c, uint64_t epoch, uint64_t op) {
    return c->vouched_epoch == epoch && c->vouched_op >= op;
}

/// True when the other end may have taken this one for dead (chorus_engine_vouch's `heard_within_ms`):
/// the connection failed, nothing arrived on it lately, or this engine's I/O thread is overdue or was
/// held up lately (a stopped or starved process, whose latest reads may be of old frames).
static int out_of_touch_locked(chorus_engine *e, const conn *c, uint64_t heard_within_ms) {
    uint64_t now = chorus_now_ms();
    return c->failed || now > __atomic_load_n(&c->last_recv_ms, __ATOMIC_ACQUIRE) + heard_within_ms ||
           now > __atomic_load_n(&e->last_tick_ms, __ATOMIC_ACQUIRE) + 2 * (uint64_t)e->tick_ms ||
           engine_held_up_within(e, now, heard_within_ms);
}

int chorus_engine_vouch(chorus_engine *e, chorus_conn_id id, uint64_t epoch, uint64_t op_id, uint32_t heard_within_ms) {
    if (op_id == 0) return CHORUS_ERR_INVALID_ARGUMENT;
    conn *c = engine_acquire(e, id);
    if (c == NULL) return CHORUS_ERR_NO_SUCH_CONNECTION;
    pthread_mutex_lock(&e->lock);
    int status = fenced_locked(c, epoch, op_id) ? CHORUS_ERR_FENCED
               : heard_within_ms > 0 && out_of_touch_locked(e, c, heard_within_ms) ? CHORUS_ERR_OUT_OF_TOUCH
                                                                                  : CHORUS_OK;
    if (status == CHORUS_OK && !vouched_locked(c, epoch, op_id)) {
        c->vouched_epoch = epoch;
        c->vouched_op = op_id;
    }
    pthread_mutex_unlock(&e->lock);
    engine_release(e, c);
    return status;
}

int chorus_engine_fence(chorus_engine *e, chorus_conn_id id, uint64_t epoch, uint64_t op_id) {
    if (op_id == 0) return CHORUS_ERR_INVALID_ARGUMENT;
    conn *c = engine_acquire(e, id);
    if (c == NULL) return CHORUS_ERR_NO_SUCH_CONNECTION;
    pthread_mutex_lock(&e->lock);
    c->fences_unanswered++;
    pthread_mutex_unlock(&e->lock);
    chorus_frame_header fence = {.type = CHORUS_FRAME_FENCE, .epoch = epoch, .op_id = op_id};
    int status = engine_send_signal(e, c, &fence);
    if (status != CHORUS_OK) {
        pthread_mutex_lock(&e->lock);
        c->fences_unanswered--;
        pthread_mutex_unlock(&e->lock);
    }
    engine_release(e, c);
    return status;
}

/// A fence: record it unless this end already vouched for the operation, and answer either way.
/// A stranger (not admitted) gets nothing, as for a probe.
static chorus_failure answer_fence(chorus_engine *e, conn *c) {
    const chorus_frame_header *h = &c->header;
    if (h->op_id == 0) return chorus_failure_of(CHORUS_ERR_UNEXPECTED_CONTROL);
    pthread_mutex_lock(&e->lock);
    int admitted = c->admitted;
    int vouched = vouched_locked(c, h->epoch, h->op_id);
    if (admitted && !vouched && !fenced_locked(c, h->epoch, h->op_id)) {
        c->fence_epoch = h->epoch;
        c->fence_op = h->op_id;
    }
    pthread_mutex_unlock(&e->lock);
    if (!admitted) return chorus_no_failure();
    chorus_frame_header answer = {.type = CHORUS_FRAME_FENCE_ANSWER, .tag = vouched ? 1 : 0,
                                  .epoch = h->epoch, .op_id = h->op_id};
    int status = engine_send_signal(e, c, &answer);
    return status == CHORUS_OK || status == CHORUS_ERR_NO_SUCH_CONNECTION ? chorus_no_failure() : chorus_failure_of(status);
}

/// An answer to a fence this end sent: an event for the owner. An answer beyond the fences sent is
/// a violation (it would otherwise queue events without bound).
static chorus_failure take_fence_answer(chorus_engine *e, conn *c) {
    if (c->header.tag > 1) return chorus_failure_of(CHORUS_ERR_UNEXPECTED_CONTROL);
    event_node *node = calloc(1, sizeof *node);
    if (node == NULL) return chorus_system_failure("malloc", ENOMEM);
    pthread_mutex_lock(&e->lock);
    int asked = c->fences_unanswered > 0;
    if (asked) c->fences_unanswered--;
    if (asked && !c->owner_closed) {
        node->event = (chorus_event){.kind = CHORUS_EVENT_FENCE_ANSWER, .conn = c->id, .header = c->header};
        engine_push_event_locked(e, node);
        node = NULL;
    }
    pthread_mutex_unlock(&e->lock);
    free(node);
    return asked ? chorus_no_failure() : chorus_failure_of(CHORUS_ERR_UNEXPECTED_CONTROL);
}

chorus_failure fence_frame(chorus_engine *e, conn *c) {
    return c->header.type == CHORUS_FRAME_FENCE ? answer_fence(e, c) : take_fence_answer(e, c);
}
