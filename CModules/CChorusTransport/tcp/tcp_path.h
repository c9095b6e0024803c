// Internal to the transport: the TCP data path's steps, which the shared-memory path takes too for
// the data frames it leaves on the stream (a peer on another host, or before its rings are agreed).
#ifndef CHORUS_TCP_PATH_H
#define CHORUS_TCP_PATH_H
#include "../core/engine.h"

/// Queues a data frame on the stream.
chorus_failure tcp_post_send(chorus_engine *e, conn *c, chorus_request *r);
/// A data frame's header on the stream: matches the head posted receive, or waits for one.
int tcp_stream_data(chorus_engine *e, conn *c);
/// A receive was posted after the stream paused: reads on.
chorus_failure tcp_resume(chorus_engine *e, conn *c);
#endif
