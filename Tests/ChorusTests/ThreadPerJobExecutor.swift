import Foundation

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
