import CChorusLauncher
#if canImport(Glibc)
import Glibc
#endif

/// Where a local launcher puts its peer processes: one CPU each when they fit in the CPUs the
/// launcher may use (as `mpirun` binds by default), else the scheduler's choice. Two peers woken
/// together after an idle gap that the scheduler left on one CPU take turns on it while the other
/// CPU sleeps (figures in docs/benchmarks.md, "Reading ahead, peers bound to CPUs").
public enum CoreBinding {
    /// The CPUs this thread may run on (its affinity), in order.
    public static func allowedCPUs() -> [Int32] {
        guard let mask = try? currentMask() else { return [] }
        return (0 ..< Int32(mask.count * 8)).filter { mask[Int($0) / 8] & (1 << ($0 % 8)) != 0 }
    }

    /// The CPU of each of `peers` processes, or nil when they do not fit one per CPU (binding would
    /// then stack peers on CPUs the scheduler could otherwise balance).
    public static func plan(peers: Int) -> [Int32]? {
        let cpus = allowedCPUs()
        return peers <= cpus.count ? Array(cpus.prefix(peers)) : nil
    }

    /// Runs `body` with this thread bound to `cpu`, then puts its affinity back: a process spawned
    /// by `body` inherits the binding from its first instruction, every thread of it included.
    static func whileBound<T>(to cpu: Int32, _ body: () throws -> T) throws -> T {
        let saved = try currentMask()
        guard cpu >= 0, Int(cpu) < saved.count * 8 else { throw LaunchError("no CPU \(cpu)") }
        var bound = [UInt8](repeating: 0, count: saved.count)
        bound[Int(cpu) / 8] = 1 << (cpu % 8)
        let status = chorus_affinity_set(bound)
        guard status == 0 else { throw LaunchError("cannot bind to CPU \(cpu): errno \(status)") }
        defer { _ = chorus_affinity_set(saved) }
        return try body()
    }

    private static func currentMask() throws -> [UInt8] {
        var mask = [UInt8](repeating: 0, count: chorus_affinity_mask_bytes())
        let status = chorus_affinity_get(&mask)
        guard status == 0 else { throw LaunchError("sched_getaffinity failed: errno \(status)") }
        return mask
    }
}
