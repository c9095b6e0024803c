// The calling thread's CPU affinity, for the local launcher's core binding (sched_getaffinity(2)
// and sched_setaffinity(2) need _GNU_SOURCE, which Swift's Glibc module does not define).
// A mask is a cpu_set_t's bytes: CPU i is bit i % 8 of byte i / 8.
#ifndef CHORUS_AFFINITY_H
#define CHORUS_AFFINITY_H

#include <stddef.h>
#include <stdint.h>

/// The size of a mask in bytes (that of cpu_set_t).
size_t chorus_affinity_mask_bytes(void);
/// Reads the calling thread's mask into `mask` (chorus_affinity_mask_bytes() bytes). 0, or errno.
int chorus_affinity_get(uint8_t *mask);
/// Sets the calling thread's mask (chorus_affinity_mask_bytes() bytes). 0, or errno.
int chorus_affinity_set(const uint8_t *mask);

#endif
