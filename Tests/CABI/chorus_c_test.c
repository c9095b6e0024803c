/*
 * A C program on libchorus.so, started as several processes by CABITests:
 *     chorus-c-test MASTER_HOST:PORT WORLD
 * Every member runs each collective (blocking and non-blocking), a shared-state synchronization
 * and the error paths, checks the results exactly, and prints "PASS rank=R checks=N" or
 * "FAIL <what>" (exit 1).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chorus.h"

static int checks;

#define CHECK(condition, ...)                                                                     \
    do {                                                                                          \
        checks++;                                                                                 \
        if (!(condition)) {                                                                       \
            printf("FAIL line %d: ", __LINE__);                                                    \
            printf(__VA_ARGS__);                                                                  \
            printf("\n");                                                                         \
            exit(1);                                                                              \
        }                                                                                         \
    } while (0)

#define CALL(expression)                                                                          \
    do {                                                                                          \
        chorus_status status_ = (expression);                                                     \
        CHECK(status_ == CHORUS_STATUS_OK, "%s: %s (%s)", #expression, chorus_status_name(status_), error.message); \
    } while (0)

enum { COUNT = 1000 };

int main(int argc, char **argv) {
    if (argc != 3) {
        printf("usage: chorus-c-test MASTER WORLD\n");
        return 2;
    }
    const char *master = argv[1];
    int world = atoi(argv[2]);
    chorus_error error;

    /* A master of its own, to exercise create, port and destroy. */
    chorus_master *own = NULL;
    CALL(chorus_master_create(NULL, 0, &own, &error));
    CHECK(chorus_master_port(own) != 0, "master port");
    chorus_master_destroy(own);

    const char *options[] = {"CHORUS_PEER_TIMEOUT_MS=5000", "CHORUS_LOG_LEVEL=error", NULL};
    chorus_comm *comm = NULL;
    CALL(chorus_comm_create(master, options, &comm, &error));
    while (chorus_comm_world_size(comm) < world) CALL(chorus_update_topology(comm, world, 1, &error));
    int rank = chorus_comm_rank(comm), n = chorus_comm_world_size(comm);
    CHECK(n == world && rank >= 0 && rank < n, "rank %d of %d", rank, n);
    CHECK(chorus_comm_epoch(comm) >= 1 && chorus_comm_peer_id(comm) >= 1, "epoch and peer id");

    /* All-reduce f32 in place: element i of rank r is r + i % 7. */
    static float values[COUNT];
    for (int i = 0; i < COUNT; i++) values[i] = (float)(rank + i % 7);
    CALL(chorus_all_reduce(comm, values, values, COUNT, CHORUS_TYPE_FLOAT32, CHORUS_OP_SUM, &error));
    for (int i = 0; i < COUNT; i++) CHECK(values[i] == (float)(n * (n - 1) / 2 + n * (i % 7)), "all-reduce [%d] = %f", i, values[i]);

    /* Quantized (int8 absmax, blocks of 64), with error feedback: element 0 of each block is 127
     * halves and the others multiples of a half within it, so the scale is exactly 0.5, nothing is
     * lost in quantizing, the sum is exact and the feedback stays zero. */
    static float halves[COUNT], feedback[COUNT];
    for (int i = 0; i < COUNT; i++) {
        halves[i] = 0.5f * (float)(i % 64 == 0 ? 127 : (rank * 31 + i) % 255 - 127);
        feedback[i] = 0;
    }
    CALL(chorus_all_reduce_quantized(comm, halves, halves, COUNT, CHORUS_TYPE_FLOAT32, CHORUS_OP_SUM, 8, 0, 64, feedback, &error));
    for (int i = 0; i < COUNT; i++) {
        float expected = 0;
        for (int r = 0; r < n; r++) expected += 0.5f * (float)(i % 64 == 0 ? 127 : (r * 31 + i) % 255 - 127);
        CHECK(halves[i] == expected && feedback[i] == 0, "quantized [%d] = %f, expected %f, feedback %f", i, halves[i], expected,
              feedback[i]);
    }
    CHECK(chorus_all_reduce_quantized(comm, halves, halves, COUNT, CHORUS_TYPE_FLOAT32, CHORUS_OP_SUM, 3, 0, 64, NULL, &error) ==
              CHORUS_STATUS_INVALID_ARGUMENT && strstr(error.message, "bits must be 8 or 4") != NULL,
          "3 bits: %s", error.message);

    /* Non-blocking: an int64 max all-reduce and a barrier in flight together, completed in order. */
    static int64_t mine[COUNT], maxima[COUNT];
    for (int i = 0; i < COUNT; i++) mine[i] = (int64_t)rank * 1000000 + i;
    chorus_request *reduce = NULL, *barrier = NULL;
    CALL(chorus_all_reduce_async(comm, mine, maxima, COUNT, CHORUS_TYPE_INT64, CHORUS_OP_MAX, &reduce, &error));
    CALL(chorus_barrier_async(comm, &barrier, &error));
    CALL(chorus_wait(barrier, &error));
    CHECK(chorus_test(reduce, &error) == CHORUS_STATUS_OK, "the earlier request completed before the later one");
    CALL(chorus_wait(reduce, &error));
    for (int i = 0; i < COUNT; i++) CHECK(maxima[i] == (int64_t)(n - 1) * 1000000 + i, "async max [%d]", i);

    /* Reduce-scatter: n blocks of COUNT int32, element j of rank r is r + j. */
    int32_t *blocks = malloc(sizeof(int32_t) * COUNT * n), mineBlock[COUNT];
    for (int j = 0; j < COUNT * n; j++) blocks[j] = rank + j;
    CALL(chorus_reduce_scatter(comm, blocks, mineBlock, COUNT, CHORUS_TYPE_INT32, CHORUS_OP_SUM, &error));
    for (int i = 0; i < COUNT; i++) CHECK(mineBlock[i] == n * (n - 1) / 2 + n * (rank * COUNT + i), "reduce-scatter [%d]", i);

    /* All-gather (non-blocking): rank r contributes r*10 + i. */
    int32_t contribution[COUNT];
    for (int i = 0; i < COUNT; i++) contribution[i] = rank * 10 + i;
    chorus_request *gather = NULL;
    CALL(chorus_all_gather_async(comm, contribution, blocks, COUNT, CHORUS_TYPE_INT32, &gather, &error));
    CALL(chorus_wait(gather, &error));
    for (int j = 0; j < COUNT * n; j++) CHECK(blocks[j] == (j / COUNT) * 10 + j % COUNT, "all-gather [%d]", j);
    free(blocks);

    /* Broadcast from the last rank. */
    double broadcast[COUNT];
    for (int i = 0; i < COUNT; i++) broadcast[i] = rank == n - 1 ? i * 0.5 : -1;
    CALL(chorus_broadcast(comm, broadcast, COUNT, CHORUS_TYPE_FLOAT64, n - 1, &error));
    for (int i = 0; i < COUNT; i++) CHECK(broadcast[i] == i * 0.5, "broadcast [%d]", i);

    /* All-Scan (sum): exclusive = ranks before, inclusive = up to and including this one. */
    float state[COUNT], exclusive[COUNT], inclusive[COUNT];
    for (int i = 0; i < COUNT; i++) state[i] = (float)(rank + 1);
    CALL(chorus_all_scan(comm, state, exclusive, inclusive, COUNT, CHORUS_TYPE_FLOAT32, CHORUS_SCAN_SUM, NULL, 0, 0, &error));
    for (int i = 0; i < COUNT; i++) {
        CHECK(exclusive[i] == (float)(rank * (rank + 1) / 2), "scan exclusive [%d]", i);
        CHECK(inclusive[i] == (float)((rank + 1) * (rank + 2) / 2), "scan inclusive [%d]", i);
    }

    /* Shared state: rank 0 holds revision 2, the others revision 1 and zeros; everyone ends with rank 0's. */
    static float weights[COUNT];
    for (int i = 0; i < COUNT; i++) weights[i] = rank == 0 ? (float)i : 0;
    chorus_state *shared = NULL;
    CALL(chorus_state_create(rank == 0 ? 2 : 1, &shared, &error));
    CALL(chorus_state_add_tensor(shared, "weights", weights, COUNT, CHORUS_TYPE_FLOAT32, 0, &error));
    chorus_sync_info info;
    CALL(chorus_synchronize(comm, shared, CHORUS_SYNC_ELECT, &info, &error));
    CHECK(info.revision == 2 && chorus_state_revision(shared) == 2, "synchronized revision %llu", (unsigned long long)info.revision);
    CHECK(info.was_outdated == (rank != 0), "outdated %d at rank %d", info.was_outdated, rank);
    for (int i = 0; i < COUNT; i++) CHECK(weights[i] == (float)i, "synchronized weights [%d]", i);
    printf("HASH %llu\n", (unsigned long long)chorus_state_content_hash(shared));
    chorus_state_destroy(shared);

    /* The ring ordered by link speed: every pair measured once, then known; the new ring computes. */
    chorus_topology_optimization first, second;
    CALL(chorus_optimize_topology(comm, 5, 0, 1, 1, &first, &error));
    CALL(chorus_optimize_topology(comm, 5, 0, 1, 1, &second, &error));
    CHECK(first.measured_pairs == n - 1 && second.measured_pairs == 0 && !second.reordered,
          "measured %d then %d pairs", first.measured_pairs, second.measured_pairs);
    CHECK(n < 2 || (first.slowest_link_before > 0 && second.slowest_link_after > 0), "link speeds");
    CHECK(n < 2 || (second.right_lanes >= 1 && second.right_lanes <= 4), "%d lanes to the right", second.right_lanes);
    for (int i = 0; i < COUNT; i++) values[i] = (float)(chorus_comm_rank(comm) + i % 7);
    CALL(chorus_all_reduce(comm, values, values, COUNT, CHORUS_TYPE_FLOAT32, CHORUS_OP_SUM, &error));
    for (int i = 0; i < COUNT; i++) CHECK(values[i] == (float)(n * (n - 1) / 2 + n * (i % 7)), "sum after optimizing [%d]", i);
    CHECK(chorus_optimize_topology(comm, 0, 0, 1, 1, NULL, &error) == CHORUS_STATUS_INVALID_ARGUMENT, "measure_ms 0 accepted");

    /* Errors: codes and messages, no crash. */
    CHECK(chorus_all_reduce(comm, NULL, values, 10, CHORUS_TYPE_FLOAT32, CHORUS_OP_SUM, &error) == CHORUS_STATUS_INVALID_ARGUMENT,
          "NULL send accepted");
    CHECK(strstr(error.message, "send is NULL") != NULL && error.retryable == 0, "message: %s", error.message);
    CHECK(chorus_all_reduce(comm, values, values, 10, (chorus_type)99, CHORUS_OP_SUM, &error) == CHORUS_STATUS_INVALID_ARGUMENT,
          "unknown type accepted");
    CHECK(strstr(error.message, "unknown chorus_type 99") != NULL, "message: %s", error.message);
    CHECK(chorus_broadcast(comm, broadcast, COUNT, CHORUS_TYPE_FLOAT64, n + 3, &error) == CHORUS_STATUS_INVALID_ARGUMENT,
          "root out of range accepted");
    CHECK(chorus_wait(NULL, &error) == CHORUS_STATUS_INVALID_ARGUMENT, "NULL request");
    CHECK(chorus_comm_create("127.0.0.1:1", options, &(chorus_comm *){NULL}, &error) == CHORUS_STATUS_MASTER_UNREACHABLE,
          "unreachable master: %s", error.message);
    CHECK(strcmp(chorus_status_name(CHORUS_STATUS_ABORTED), "aborted") == 0, "status name");

    CALL(chorus_comm_leave(comm, &error));
    chorus_comm_destroy(comm);
    printf("PASS rank=%d checks=%d\n", rank, checks);
    return 0;
}
