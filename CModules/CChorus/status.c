// The one piece of the C ABI written in C: status names (the rest is Swift, Sources/ChorusC).
#include "chorus.h"

const char *chorus_status_name(int status) {
    switch (status) {
    case CHORUS_STATUS_OK: return "ok";
    case CHORUS_STATUS_ABORTED: return "aborted";
    case CHORUS_STATUS_TOPOLOGY_UPDATE_REQUIRED: return "topology update required";
    case CHORUS_STATUS_TOPOLOGY_FAILED: return "topology failed";
    case CHORUS_STATUS_INVALID_ARGUMENT: return "invalid argument";
    case CHORUS_STATUS_MASTER_UNREACHABLE: return "master unreachable";
    case CHORUS_STATUS_EVICTED: return "evicted";
    case CHORUS_STATUS_TIMED_OUT: return "timed out";
    case CHORUS_STATUS_SETUP_FAILED: return "setup failed";
    case CHORUS_STATUS_PENDING: return "pending";
    case CHORUS_STATUS_AUTHENTICATION_FAILED: return "authentication failed";
    default: return "unknown status";
    }
}
