// A userspace delay line between two TUN devices: every packet read from one comes out of the other
// DELAY_MS later, in order. With the TUN devices moved into two network namespaces, it joins them by
// a link with a one-way delay (this kernel has no netem). Rate limiting is left to tbf on the TUNs.
//
// The devices take TCP segmentation offload (IFF_VNET_HDR, TUNSETOFFLOAD): the stacks hand over
// segments of up to 64 KiB with a virtio header, which pass through unchanged. Per-packet work at
// 1500 bytes capped the line near 0.45 Gbit/s each way on a 2-core machine; whole segments cut the
// packets (and the system calls) per byte about 40-fold.
//
// Usage: delayline TUN_A TUN_B DELAY_MS     (creates both devices, prints "ready", runs until killed)
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 65536            // packets held per direction (more than 1 Gbit/s x 25 ms of any size)
#define MAX_PACKET (65536 + 64) // a 64 KiB segment and its virtio header

typedef struct {
    uint64_t due_us[SLOTS];
    uint32_t length[SLOTS];
    uint8_t *data[SLOTS];
    unsigned head, tail; // tail: next free slot; head: next to send
    unsigned long dropped;
} queue;

static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int open_tun(const char *name) {
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return -1;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI | IFF_VNET_HDR;
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    unsigned offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
    if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETOFFLOAD, offloads) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/// Reads every waiting packet from `fd` into `q`, stamped to leave `delay_us` from now.
static void take(int fd, queue *q, uint64_t delay_us) {
    static uint8_t scratch[MAX_PACKET];
    for (;;) {
        ssize_t got = read(fd, scratch, sizeof scratch);
        if (got <= 0) return;
        unsigned next = (q->tail + 1) % SLOTS;
        uint8_t *copy = next == q->head ? NULL : malloc((size_t)got);
        if (copy == NULL) {
            q->dropped++;
            continue;
        }
        memcpy(copy, scratch, (size_t)got);
        q->data[q->tail] = copy;
        q->length[q->tail] = (uint32_t)got;
        q->due_us[q->tail] = now_us() + delay_us;
        q->tail = next;
    }
}

/// Writes the packets that are due; returns microseconds until the next one (or -1 if empty).
static int64_t release(int fd, queue *q) {
    uint64_t now = now_us();
    while (q->head != q->tail && q->due_us[q->head] <= now) {
        if (write(fd, q->data[q->head], q->length[q->head]) < 0 && errno == EAGAIN) break;
        free(q->data[q->head]);
        q->head = (q->head + 1) % SLOTS;
    }
    return q->head == q->tail ? -1 : (int64_t)(q->due_us[q->head] - now);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s TUN_A TUN_B DELAY_MS\n", argv[0]);
        return 64;
    }
    uint64_t delay_us = (uint64_t)atoi(argv[3]) * 1000u;
    int a = open_tun(argv[1]), b = open_tun(argv[2]);
    if (a < 0 || b < 0) {
        perror("opening TUN devices");
        return 1;
    }
    queue *a_to_b = calloc(1, sizeof *a_to_b), *b_to_a = calloc(1, sizeof *b_to_a);
    if (!a_to_b || !b_to_a) return 1;
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        int64_t wait_a = release(b, a_to_b), wait_b = release(a, b_to_a);
        int64_t wait = wait_a < 0 ? wait_b : (wait_b < 0 ? wait_a : (wait_a < wait_b ? wait_a : wait_b));
        struct pollfd fds[2] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN}};
        // Millisecond poll granularity; a due packet waits at most ~1 ms extra.
        int timeout = wait < 0 ? 1000 : (int)((wait + 999) / 1000);
        if (poll(fds, 2, timeout) < 0 && errno != EINTR) return 1;
        if (fds[0].revents & POLLIN) take(a, a_to_b, delay_us);
        if (fds[1].revents & POLLIN) take(b, b_to_a, delay_us);
    }
}
