// Internal to the transport: why a connection fails, carried from where it was found to the
// connection's FAILED event. A failed system call keeps its errno and its name, so the owner sees
// "recv: Connection timed out", not only "system call failed".
#ifndef CHORUS_FAILURE_H
#define CHORUS_FAILURE_H
#include "../include/chorus_transport.h"

typedef struct chorus_failure {
    int status;       // CHORUS_OK: no failure
    int sys_errno;    // a failed system call's errno, 0 otherwise
    const char *call; // that call's name (a static string), NULL otherwise
} chorus_failure;

static inline chorus_failure chorus_no_failure(void) { return (chorus_failure){CHORUS_OK, 0, NULL}; }

/// A failure that is no system call's (a protocol violation, a timeout, a close).
static inline chorus_failure chorus_failure_of(int status) { return (chorus_failure){status, 0, NULL}; }

/// A failed system call, mapped to a status in the one place the transport does it: the peer's
/// reset or close (0 for end of stream, EPIPE, ECONNRESET) is CHORUS_ERR_PEER_CLOSED, anything else
/// CHORUS_ERR_SYSTEM; errno and the call are kept either way.
chorus_failure chorus_system_failure(const char *call, int sys_errno);
#endif
