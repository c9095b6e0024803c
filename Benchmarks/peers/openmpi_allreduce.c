// MPI_Allreduce (or, with "-c exscan", MPI_Exscan) sweep writing the same JSON rows as chorus-bench,
// so the two can be charted together. Build and run with run-openmpi.sh (TCP forced with --mca btl tcp,self).
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    long min_bytes = 4096, max_bytes = 64L << 20;
    int factor = 2, iterations = 20, warmup = 5;
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
    }
    MPI_Init(&argc, &argv);
    int rank, world;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    FILE *out = rank == 0 && json ? fopen(json, "a") : NULL;
    if (rank == 0) printf("# %s f32 sum, %d ranks\n%12s %12s %12s %12s\n", exscan ? "MPI_Exscan" : "MPI_Allreduce", world,
                          "size(B)", "time(us)", "algbw(GB/s)", "busbw(GB/s)");
    for (long bytes = min_bytes; bytes <= max_bytes; bytes *= factor) {
        long count = bytes / 4;
        float *send = malloc(count * sizeof *send), *recv = malloc(count * sizeof *recv);
        for (long i = 0; i < count; i++) send[i] = (float)((rank * 7 + i) % 4);
        double *times = malloc(iterations * sizeof *times), *slowest = malloc(iterations * sizeof *slowest);
        for (int it = 0; it < warmup + iterations; it++) {
            double started = MPI_Wtime();
            if (exscan) MPI_Exscan(send, recv, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            else MPI_Allreduce(send, recv, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            if (it >= warmup) times[it - warmup] = MPI_Wtime() - started;
        }
        MPI_Allreduce(times, slowest, iterations, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        qsort(slowest, iterations, sizeof *slowest, by_value);
        double median = slowest[iterations / 2];
        double algbw = (double)bytes / median / 1e9, busbw = exscan ? algbw : algbw * 2.0 * (world - 1) / world;
        if (rank == 0) {
            printf("%12ld %12.1f %12.3f %12.3f\n", bytes, median * 1e6, algbw, busbw);
            if (out) fprintf(out, "{\"collective\":\"%s\",\"algorithm\":\"%s\",\"transport\":\"tcp\",\"library\":\"openmpi\","
                                  "\"peers\":%d,\"dtype\":\"f32\",\"op\":\"sum\",\"bytes\":%ld,\"count\":%ld,\"in_place\":false,"
                                  "\"time_us_median\":%.2f,\"time_us_min\":%.2f,\"algbw_GBps\":%.4f,\"busbw_GBps\":%.4f,\"wrong\":0,\"checked\":false}\n",
                             exscan ? "allscan" : "allreduce", exscan ? "MPI_Exscan" : "MPI_Allreduce",
                             world, bytes, count, median * 1e6, slowest[0] * 1e6, algbw, busbw);
        }
        free(send); free(recv); free(times); free(slowest);
    }
    if (out) fclose(out);
    MPI_Finalize();
    return 0;
}
