// MPI_Allreduce (or, with "-c exscan", MPI_Exscan) sweep writing the same JSON rows as chorus-bench,
// so the two can be charted together. Build and run with run-openmpi.sh (TCP forced with --mca btl tcp,self).
// Timed like chorus-bench: per iteration the slowest rank's time; "-g MS" puts a barrier and MS
// milliseconds idle before each timed call (chorus-bench --gap-ms); cpu(us) is the CPU time the call
// took in its process, less what timing an empty call costs (as chorus-bench's cpuCostOfTiming), the
// busiest rank's median; the last all-reduce's result is checked.
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

int main(int argc, char **argv) {
    long min_bytes = 4096, max_bytes = 64L << 20;
    int factor = 2, iterations = 20, warmup = 5, gap_ms = -1;
    const char *json = NULL;
    int exscan = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-b")) min_bytes = parse_size(argv[i + 1]);
        else if (!strcmp(argv[i], "-e")) max_bytes = parse_size(argv[i + 1]);
        else if (!strcmp(argv[i], "-f")) factor = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-n")) iterations = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-w")) warmup = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--json")) json = argv[i + 1];
        else if (!strcmp(argv[i], "-c")) exscan = !strcmp(argv[i + 1], "exscan");
        else if (!strcmp(argv[i], "-g")) gap_ms = atoi(argv[i + 1]);
    }
    MPI_Init(&argc, &argv);
    int rank, world;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    FILE *out = rank == 0 && json ? fopen(json, "a") : NULL;
    double timing_cpu = cpu_cost_of_timing(iterations, gap_ms);
    if (rank == 0) printf("# cpu(us): the call's CPU less %.2f us, what timing an empty call costs on rank 0\n", timing_cpu * 1e6);
    if (rank == 0) printf("# %s f32 sum, %d ranks, %s\n%12s %12s %12s %12s %12s %8s\n", exscan ? "MPI_Exscan" : "MPI_Allreduce", world,
                          gap_ms >= 0 ? "a barrier and a gap before each call" : "back to back",
                          "size(B)", "time(us)", "cpu(us)", "algbw(GB/s)", "busbw(GB/s)", "#wrong");
    for (long bytes = min_bytes; bytes <= max_bytes; bytes *= factor) {
        long count = bytes / 4;
        float *send = malloc(count * sizeof *send), *recv = malloc(count * sizeof *recv);
        for (long i = 0; i < count; i++) send[i] = (float)((rank * 7 + i) % 4);
        double *times = malloc(iterations * sizeof *times), *slowest = malloc(iterations * sizeof *slowest);
        double *cpu = malloc(iterations * sizeof *cpu), *busiest = malloc(iterations * sizeof *busiest);
        long wrong = 0, all_wrong = 0;
        for (int it = 0; it < warmup + iterations; it++) {
            pace(gap_ms);
            double cpu_started = cpu_seconds();
            double started = MPI_Wtime();
            if (exscan) MPI_Exscan(send, recv, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            else MPI_Allreduce(send, recv, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            if (it >= warmup) {
                times[it - warmup] = MPI_Wtime() - started;
                cpu[it - warmup] = cpu_seconds() - cpu_started - timing_cpu;
            }
        }
        for (long i = 0; !exscan && i < count; i++) { // the last call's result (checking each would pace them)
            float expected = 0;
            for (int r = 0; r < world; r++) expected += (float)((r * 7 + i) % 4);
            if (recv[i] != expected) wrong++;
        }
        MPI_Allreduce(times, slowest, iterations, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        MPI_Allreduce(cpu, busiest, iterations, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        MPI_Allreduce(&wrong, &all_wrong, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
        qsort(slowest, iterations, sizeof *slowest, by_value);
        qsort(busiest, iterations, sizeof *busiest, by_value);
        double median = slowest[iterations / 2], cpu_median = busiest[iterations / 2];
        double algbw = (double)bytes / median / 1e9, busbw = exscan ? algbw : algbw * 2.0 * (world - 1) / world;
        if (rank == 0) {
            printf("%12ld %12.1f %12.1f %12.3f %12.3f %8s\n", bytes, median * 1e6, cpu_median * 1e6, algbw, busbw,
                   exscan ? "N/A" : (all_wrong == 0 ? "0" : "WRONG"));
            if (out) fprintf(out, "{\"collective\":\"%s\",\"algorithm\":\"%s\",\"transport\":\"tcp\",\"library\":\"openmpi\","
                                  "\"peers\":%d,\"dtype\":\"f32\",\"op\":\"sum\",\"bytes\":%ld,\"count\":%ld,\"in_place\":false,"
                                  "\"time_us_median\":%.2f,\"time_us_min\":%.2f,\"cpu_us_median\":%.2f,\"cpu_us_timing\":%.2f,\"algbw_GBps\":%.4f,\"busbw_GBps\":%.4f,"
                                  "\"wrong\":%ld,\"checked\":%s,\"gap_ms\":%d}\n",
                             exscan ? "allscan" : "allreduce", exscan ? "MPI_Exscan" : "MPI_Allreduce",
                             world, bytes, count, median * 1e6, slowest[0] * 1e6, cpu_median * 1e6, timing_cpu * 1e6, algbw, busbw,
                             all_wrong, exscan ? "false" : "true", gap_ms);
        }
        free(send); free(recv); free(times); free(slowest); free(cpu); free(busiest);
    }
    if (out) fclose(out);
    MPI_Finalize();
    return 0;
}
