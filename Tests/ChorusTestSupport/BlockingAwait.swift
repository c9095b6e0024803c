import Dispatch
import Synchronization

/// Runs an async call to completion from blocking code (a peer thread of a test, the test peer
/// program), which must not itself be running on Swift's cooperative pool.
public func blockingAwait<Result: Sendable>(_ call: @escaping @Sendable () async throws -> Result) throws -> Result {
    let outcome = Mutex<Swift.Result<Result, any Error>?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task {
        let result: Swift.Result<Result, any Error>
        do { result = .success(try await call()) } catch { result = .failure(error) }
        outcome.withLock { $0 = result }
        done.signal()
    }
    done.wait()
    return try outcome.withLock { $0! }.get()
}
