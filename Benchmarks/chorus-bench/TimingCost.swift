#if canImport(Glibc)
import Glibc
#endif

/// CPU time of every thread of this process so far.
func processCPUSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) * 1e-9
}

/// The CPU seconds that timing a call costs by itself: the median, over `samples` empty calls each
/// paced like the timed ones (`pace`: the barrier and the gap, or nothing), of the CPU charged
/// between the two CPU clock reads around the two wall clock reads. Reading the process's CPU clock
/// is a system call that walks its threads (0.3-0.5 µs here, more after an idle gap), and part of each
/// read falls inside the window it measures; the sweep takes this cost out of every call's CPU time so
/// that `cpu(us)` is the call's own. The wall clock is read in user space (~30 ns) and left as is.
/// `Benchmarks/peers/openmpi_bench.c` measures and subtracts it the same way.
func cpuCostOfTiming(samples: Int, pace: () throws -> Void) rethrows -> Double {
    var costs: [Double] = []
    costs.reserveCapacity(samples)
    for _ in 0 ..< samples {
        try pace()
        let cpuStarted = processCPUSeconds()
        let started = ContinuousClock.now
        let elapsed = ContinuousClock.now - started
        costs.append(processCPUSeconds() - cpuStarted)
        withExtendedLifetime(elapsed) {}
    }
    costs.sort()
    return costs[costs.count / 2]
}
