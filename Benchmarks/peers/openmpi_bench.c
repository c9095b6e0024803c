// chorus-bench's sweep on Open MPI: the same collectives, sizes (nccl-tests' conventions: all-reduce
// and broadcast count the buffer, reduce-scatter its whole input, all-gather its whole output), timing
// and JSON rows, so the two can be charted together. Build and run with run-openmpi.sh (TCP forced
// with --mca btl tcp,self). "-c NAME": allreduce (default), reducescatter, allgather, broadcast (from
// rank 0, in place, the buffer first copied from the input inside the timed call as chorus-bench
// does), allscan (MPI_Scan, inclusive like chorus-bench's), exscan (MPI_Exscan) or barrier.
// Timed like chorus-bench: per iteration the slowest rank's time; "-g MS" puts a barrier and MS
// milliseconds idle before each timed call (chorus-bench --gap-ms); cpu(us) is the CPU time the call
// took in its process, less what timing an empty call costs (as chorus-bench's cpuCostOfTiming), the
// busiest rank's median; the last call's result is checked on every rank (exscan: on ranks above 0).
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long parse_size(const char *text) {
    char *end;
    long value = strtol(text, &end, 10);
    switch (*end) {
    case 'K': case 'k': return value << 10;
    case 'M': case 'm': return value << 20;
    case 'G': case 'g': return value << 30;
    default: return value;
    }
}

// CPU time of every thread of this process so far (the clock chorus-bench reads).
static double cpu_seconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

static void idle_for(int ms) {
    struct timespec left = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&left, &left) != 0) {}
}

static void pace(int gap_ms) {
    if (gap_ms < 0) return;
    MPI_Barrier(MPI_COMM_WORLD);
    if (gap_ms > 0) idle_for(gap_ms);
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// The CPU seconds timing a call costs by itself: the median over empty calls, paced like the timed
// ones, of the CPU charged between the two CPU clock reads around the two wall clock reads.
static double cpu_cost_of_timing(int samples, int gap_ms) {
    double *costs = malloc(samples * sizeof *costs);
    for (int i = 0; i < samples; i++) {
        pace(gap_ms);
        double cpu_started = cpu_seconds();
        volatile double started = MPI_Wtime(), elapsed = MPI_Wtime() - started;
        (void)elapsed;
        costs[i] = cpu_seconds() - cpu_started;
    }
    qsort(costs, samples, sizeof *costs, by_value);
    double median = costs[samples / 2];
    free(costs);
    return median;
}

enum collective { ALLREDUCE, REDUCESCATTER, ALLGATHER, BROADCAST, ALLSCAN, EXSCAN, BARRIER };
static const char *const names[] = {"allreduce", "reducescatter", "allgather", "broadcast", "allscan", "exscan", "barrier"};
static const char *const calls[] = {"MPI_Allreduce", "MPI_Reduce_scatter_block", "MPI_Allgather", "MPI_Bcast", "MPI_Scan",
                                    "MPI_Exscan", "MPI_Barrier"};

// A rank's input at an index: small integers, so every sum is exact in f32 (chorus-bench --check).
static float pattern(int rank, long index) { return (float)((rank * 7 + index) % 4); }

// One size's buffers: `input` elements in, `output` out (broadcast: the same buffer).
typedef struct {
    enum collective kind;
    int rank, world;
    long input, output, block;
    float *send, *receive;
} buffers;

static buffers make_buffers(enum collective kind, long bytes, int rank, int world) {
    long count = bytes / 4, block = count / world;
    buffers b = {kind, rank, world, count, count, block, NULL, NULL};
    if (kind == REDUCESCATTER) b.input = block * world, b.output = block;
    if (kind == ALLGATHER) b.input = block, b.output = block * world;
    if (kind == BARRIER) b.input = b.output = 0;
    b.send = malloc((b.input + 1) * sizeof *b.send);
    b.receive = malloc((b.output + 1) * sizeof *b.receive);
    for (long i = 0; i < b.input; i++) b.send[i] = pattern(rank, i);
    return b;
}

static void run(const buffers *b) {
    switch (b->kind) {
    case ALLREDUCE: MPI_Allreduce(b->send, b->receive, (int)b->input, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); break;
    case REDUCESCATTER: MPI_Reduce_scatter_block(b->send, b->receive, (int)b->block, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); break;
    case ALLGATHER: MPI_Allgather(b->send, (int)b->block, MPI_FLOAT, b->receive, (int)b->block, MPI_FLOAT, MPI_COMM_WORLD); break;
    case BROADCAST:
        memcpy(b->receive, b->send, b->input * sizeof *b->send);
        MPI_Bcast(b->receive, (int)b->input, MPI_FLOAT, 0, MPI_COMM_WORLD);
        break;
    case ALLSCAN: MPI_Scan(b->send, b->receive, (int)b->input, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); break;
    case EXSCAN: MPI_Exscan(b->send, b->receive, (int)b->input, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); break;
    case BARRIER: MPI_Barrier(MPI_COMM_WORLD); break;
    }
}

// The exact output at an index, the sum of the patterns of ranks [from, to).
static float sum_of(int from, int to, long index) {
    float sum = 0;
    for (int r = from; r < to; r++) sum += pattern(r, index);
    return sum;
}

static long count_wrong(const buffers *b) {
    long wrong = 0;
    for (long i = 0; i < b->output; i++) {
        float expected;
        switch (b->kind) {
        case ALLREDUCE: expected = sum_of(0, b->world, i); break;
        case REDUCESCATTER: expected = sum_of(0, b->world, b->rank * b->block + i); break;
        case ALLGATHER: expected = pattern((int)(i / b->block), i % b->block); break;
        case BROADCAST: expected = pattern(0, i); break;
        case ALLSCAN: expected = sum_of(0, b->rank + 1, i); break;
        case EXSCAN: if (b->rank == 0) return 0; expected = sum_of(0, b->rank, i); break;
        default: return 0;
        }
        if (b->receive[i] != expected) wrong++;
    }
    return wrong;
}

static double bus_factor(enum collective kind, int n) {
    switch (kind) {
    case ALLREDUCE: return 2.0 * (n - 1) / n;
    case REDUCESCATTER: case ALLGATHER: return (double)(n - 1) / n;
    case BARRIER: return 0;
    default: return 1;
    }
}

int main(int argc, char **argv) {
    long min_bytes = 4096, max_bytes = 64L << 20;
    int factor = 2, iterations = 20, warmup = 5, gap_ms = -1;
    const char *json = NULL;
    enum collective kind = ALLREDUCE;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-b")) min_bytes = parse_size(argv[i + 1]);
        else if (!strcmp(argv[i], "-e")) max_bytes = parse_size(argv[i + 1]);
        else if (!strcmp(argv[i], "-f")) factor = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-n")) iterations = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-w")) warmup = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--json")) json = argv[i + 1];
        else if (!strcmp(argv[i], "-g")) gap_ms = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-c")) {
            int found = 0;
            for (int k = 0; k <= BARRIER; k++)
                if (!strcmp(argv[i + 1], names[k])) kind = (enum collective)k, found = 1;
            if (!found) {
                fprintf(stderr, "unknown collective '%s'\n", argv[i + 1]);
                return 1;
            }
        }
    }
    MPI_Init(&argc, &argv);
    int rank, world;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    FILE *out = rank == 0 && json ? fopen(json, "a") : NULL;
    double timing_cpu = cpu_cost_of_timing(iterations, gap_ms);
    if (rank == 0) printf("# cpu(us): the call's CPU less %.2f us, what timing an empty call costs on rank 0\n", timing_cpu * 1e6);
    if (rank == 0) printf("# %s f32 sum, %d ranks, %s\n%12s %12s %12s %12s %12s %8s\n", calls[kind], world,
                          gap_ms >= 0 ? "a barrier and a gap before each call" : "back to back",
                          "size(B)", "time(us)", "cpu(us)", "algbw(GB/s)", "busbw(GB/s)", "#wrong");
    if (kind == BARRIER) min_bytes = max_bytes = 0;
    for (long bytes = min_bytes; bytes <= max_bytes; bytes = bytes > 0 ? bytes * factor : max_bytes + 1) {
        buffers b = make_buffers(kind, bytes, rank, world);
        double *times = malloc(iterations * sizeof *times), *slowest = malloc(iterations * sizeof *slowest);
        double *cpu = malloc(iterations * sizeof *cpu), *busiest = malloc(iterations * sizeof *busiest);
        for (int it = 0; it < warmup + iterations; it++) {
            pace(gap_ms);
            double cpu_started = cpu_seconds();
            double started = MPI_Wtime();
            run(&b);
            if (it >= warmup) {
                times[it - warmup] = MPI_Wtime() - started;
                cpu[it - warmup] = cpu_seconds() - cpu_started - timing_cpu;
            }
        }
        long wrong = count_wrong(&b), all_wrong = 0; // the last call's (checking each would pace them)
        MPI_Allreduce(times, slowest, iterations, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        MPI_Allreduce(cpu, busiest, iterations, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        MPI_Allreduce(&wrong, &all_wrong, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
        qsort(slowest, iterations, sizeof *slowest, by_value);
        qsort(busiest, iterations, sizeof *busiest, by_value);
        double median = slowest[iterations / 2], cpu_median = busiest[iterations / 2];
        double algbw = median > 0 ? (double)bytes / median / 1e9 : 0, busbw = algbw * bus_factor(kind, world);
        if (rank == 0) {
            printf("%12ld %12.1f %12.1f %12.3f %12.3f %8s\n", bytes, median * 1e6, cpu_median * 1e6, algbw, busbw,
                   all_wrong == 0 ? "0" : "WRONG");
            if (out) fprintf(out, "{\"collective\":\"%s\",\"algorithm\":\"%s\",\"transport\":\"tcp\",\"library\":\"openmpi\","
                                  "\"peers\":%d,\"dtype\":\"f32\",\"op\":\"sum\",\"bytes\":%ld,\"count\":%ld,\"in_place\":%s,"
                                  "\"time_us_median\":%.2f,\"time_us_min\":%.2f,\"cpu_us_median\":%.2f,\"cpu_us_timing\":%.2f,"
                                  "\"algbw_GBps\":%.4f,\"busbw_GBps\":%.4f,\"wrong\":%ld,\"checked\":true,\"gap_ms\":%d}\n",
                             names[kind], calls[kind], world, bytes, b.input > b.output ? b.input : b.output,
                             kind == BROADCAST ? "true" : "false", median * 1e6, slowest[0] * 1e6, cpu_median * 1e6,
                             timing_cpu * 1e6, algbw, busbw, all_wrong, gap_ms);
        }
        free(b.send); free(b.receive); free(times); free(slowest); free(cpu); free(busiest);
    }
    if (out) fclose(out);
    MPI_Finalize();
    return 0;
}
