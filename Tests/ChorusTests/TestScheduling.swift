import Foundation
import Testing

/// Runs every job of a task on a thread of its own. Peers in the tests block inside Chorus calls,
/// which must not hold Swift's few cooperative threads (2 on these machines); as tasks, though, they
/// inherit the test's task-locals, so an `#expect` that fails inside a peer is attributed to its test.
final class ThreadPerJobExecutor: TaskExecutor {
    static let shared = ThreadPerJobExecutor()

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let thread = Thread { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
        thread.stackSize = 1 << 22
        thread.start()
    }
}

/// Suites that load both cores (the 8-peer matrices, 100 MiB shared states) or start peer processes
/// with short timeouts take this trait: at most one of them runs at a time, so a process test's 2 s
/// peer timeout never competes with a matrix for the cores. Light suites still run beside them.
struct ExclusiveCPU: SuiteTrait, TestTrait, TestScoping {
    var isRecursive: Bool { false }

    func provideScope(for test: Test, testCase: Test.Case?,
                      performing function: @Sendable () async throws -> Void) async throws {
        await CPUGate.shared.acquire()
        do {
            try await function()
        } catch {
            await CPUGate.shared.release()
            throw error
        }
        await CPUGate.shared.release()
    }
}

extension Trait where Self == ExclusiveCPU {
    /// See `ExclusiveCPU`.
    static var exclusiveCPU: ExclusiveCPU { ExclusiveCPU() }
}

/// A lock for async code: one holder, waiters resumed in order.
actor CPUGate {
    static let shared = CPUGate()
    private var held = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func acquire() async {
        if !held {
            held = true
            return
        }
        await withCheckedContinuation { waiters.append($0) }
    }

    func release() {
        if waiters.isEmpty { held = false } else { waiters.removeFirst().resume() }
    }
}
