// The TCP data path: data frames travel on the connection's stream socket itself, in order with its
// control frames. A send is queued on the stream; a data frame's payload is read by the stream
// reader straight into the head posted receive, after its header matched that receive (epoch, op,
// tag, length). A frame that arrives before its receive is posted stops the reader: the socket
// buffer then fills and the sender's kernel holds its bytes back (the flow control), and the
// stream resumes when the receive is posted.
#include "tcp_path.h"

chorus_failure tcp_post_send(chorus_engine *e, conn *c, chorus_request *r) {
    return chorus_failure_of(engine_submit(e, c, &r->item));
}

int tcp_stream_data(chorus_engine *e, conn *c) {
    pthread_mutex_lock(&e->lock);
    chorus_request *r = c->recv_head;
    int status = r == NULL ? CHORUS_PATH_WAIT : engine_match_receive(&c->header, r);
    if (r == NULL) {
        c->receive_wanted = 1; // chorus_engine_post_recv flags the connection for attention
    } else if (status == CHORUS_OK) {
        c->recv_head = r->next;
        if (c->recv_head == NULL) c->recv_tail = NULL;
        c->active_recv = r;
    }
    pthread_mutex_unlock(&e->lock);
    return status;
}

chorus_failure tcp_resume(chorus_engine *e, conn *c) {
    stream_read(e, c); // fails the connection itself if it must
    return chorus_no_failure();
}

/// A dialer that offers shared memory (a peer configured for it) is told no: the stream carries the
/// data. Any other frame of a path's own is a violation here.
static chorus_failure tcp_stream_frame(chorus_engine *e, conn *c, const chorus_frame_header *h) {
    if (h->type != CHORUS_FRAME_SHM_OFFER) return chorus_failure_of(CHORUS_ERR_UNEXPECTED_CONTROL);
    chorus_frame_header no = {.type = CHORUS_FRAME_SHM_ANSWER, .tag = 0};
    engine_send_signal(e, c, &no); // a failure to queue it fails the connection anyway
    return chorus_no_failure();
}

const chorus_data_path chorus_tcp_path = {
    .post_send = tcp_post_send,
    .stream_data = tcp_stream_data,
    .stream_frame = tcp_stream_frame,
    .resume = tcp_resume,
};
