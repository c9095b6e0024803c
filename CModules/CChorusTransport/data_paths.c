// The one list of data paths: a chorus_data_path_kind names one of these tables. A new transport
// is a folder beside tcp/, rdma/ and shm/, a value of chorus_data_path_kind and a line here.
#include "core/data_path.h"
#include "rdma/verbs.h"

extern const chorus_data_path chorus_tcp_path;
extern const chorus_data_path chorus_shm_path;
#if CHORUS_HAVE_RDMA_HEADERS
extern const chorus_data_path chorus_rdma_path;
#else
/// Stands for the RDMA path in a build without its headers: never available, and says why.
static const chorus_data_path chorus_rdma_path = {.available = chorus_rdma_probe};
#endif

const chorus_data_path *chorus_data_path_for(int kind) {
    switch (kind) {
    case CHORUS_PATH_TCP: return &chorus_tcp_path;
    case CHORUS_PATH_RDMA: return &chorus_rdma_path;
    case CHORUS_PATH_SHM: return &chorus_shm_path;
    default: return NULL;
    }
}
