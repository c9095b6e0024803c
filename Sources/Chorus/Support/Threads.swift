#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// A detached OS thread running one closure: for loops that block (the master's event loop, the
/// async bridge), which must never run on Swift's cooperative thread pool.
final class Thread: Sendable {
    private let body: Mutex<(@Sendable () -> Void)?>

    init(_ body: @escaping @Sendable () -> Void) { self.body = Mutex(body) }

    func start() {
        let box = Unmanaged.passRetained(self)
        var handle = pthread_t()
        let result = pthread_create(&handle, nil, { raw in
            let thread = Unmanaged<Thread>.fromOpaque(raw!).takeRetainedValue()
            thread.body.withLock { $0.take() }?()
            return nil
        }, box.toOpaque())
        precondition(result == 0, "pthread_create failed: \(result)")
        pthread_detach(handle)
    }
}

/// Sleeps for a few milliseconds (used only while shutting down).
func sleepBriefly() {
    var request = timespec(tv_sec: 0, tv_nsec: 2_000_000)
    nanosleep(&request, nil)
}
