#define _GNU_SOURCE
#include "chorus_affinity.h"

#include <errno.h>
#include <sched.h>
#include <string.h>

size_t chorus_affinity_mask_bytes(void) { return sizeof(cpu_set_t); }

int chorus_affinity_get(uint8_t *mask) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return errno;
    memcpy(mask, &set, sizeof set);
    return 0;
}

int chorus_affinity_set(const uint8_t *mask) {
    cpu_set_t set;
    memcpy(&set, mask, sizeof set);
    return sched_setaffinity(0, sizeof set, &set) == 0 ? 0 : errno;
}
