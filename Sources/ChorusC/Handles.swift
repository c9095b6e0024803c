import CChorus
import Chorus
import Dispatch
import Synchronization

// The objects behind the C ABI's opaque handles. A handle is an `Unmanaged` reference: created
// retained, released by the matching destroy (or by waiting on a request).

final class MasterHandle {
    let master: Master
    init(_ master: Master) { self.master = master }
}

/// A communicator and the order of the calls on it: non-blocking calls go through a serial queue,
/// and a blocking call runs after every one queued before it, so calls run in the order they were
/// made and a non-blocking call never overtakes an earlier one.
final class CommHandle: @unchecked Sendable {
    let communicator: Communicator
    /// Runs the non-blocking calls, in order.
    private let queue = DispatchQueue(label: "chorus.c-abi.communicator")
    /// Non-blocking calls queued and not finished.
    private let queued = Mutex(0)
    init(_ communicator: Communicator) { self.communicator = communicator }

    /// Runs a blocking call after every non-blocking call made before it: on the caller's thread
    /// when none is queued (the communicator serializes its own calls; `DispatchQueue.sync` cost
    /// about 1 us a call), else behind them on the queue.
    func inOrder<T>(_ body: () throws -> T) throws -> T {
        if queued.withLock({ $0 == 0 }) { return try body() }
        return try queue.sync(execute: body)
    }

    /// Queues a non-blocking call behind every call made before it.
    func enqueue(_ body: @escaping @Sendable () -> Void) {
        queued.withLock { $0 += 1 }
        queue.async {
            body()
            self.queued.withLock { $0 -= 1 }
        }
    }

    /// Waits until every queued call has finished.
    func drain() { queue.sync {} }
}

final class StateHandle: @unchecked Sendable {
    let state: SharedState
    init(_ state: SharedState) { self.state = state }
}

/// A non-blocking call: the queue starts its collective in flight (`Communicator`'s start forms),
/// and it completes once that has its verdict (or at once, when the start failed).
final class RequestHandle: @unchecked Sendable {
    private enum State {
        case queued
        case inFlight(PendingCollective)
        case finished((any Error)?)
    }

    private let state = Mutex<State>(.queued)
    /// Signalled when the queue has run the call (finished, or started in flight).
    private let ran = DispatchSemaphore(value: 0)

    func finish(_ error: (any Error)?) {
        state.withLock { $0 = .finished(error) }
        ran.signal()
    }

    func started(_ pending: PendingCollective) {
        state.withLock { $0 = .inFlight(pending) }
        ran.signal()
    }

    /// Nil while running; then the error, or `.some(nil)` for success. Never blocks: an operation in
    /// flight reads the verdicts that arrived only when no other call holds the communicator.
    var result: (any Error)?? {
        switch state.withLock({ $0 }) {
        case .queued: return nil
        case .finished(let error): return .some(error)
        case .inFlight(let pending):
            do {
                guard try pending.test() else { return nil }
                return .some(nil)
            } catch {
                return .some(error)
            }
        }
    }

    func wait() -> (any Error)? {
        ran.wait()
        ran.signal() // a later test or wait sees it run too
        if case .inFlight(let pending) = state.withLock({ $0 }) {
            do {
                try pending.wait()
                state.withLock { $0 = .finished(nil) }
            } catch {
                state.withLock { $0 = .finished(error) }
            }
        }
        guard case .finished(let error) = state.withLock({ $0 }) else { preconditionFailure("a waited request has finished") }
        return error
    }
}

func retained<T: AnyObject>(_ object: T) -> OpaquePointer { OpaquePointer(Unmanaged.passRetained(object).toOpaque()) }
func borrowed<T: AnyObject>(_ pointer: OpaquePointer, as _: T.Type) -> T {
    Unmanaged<T>.fromOpaque(UnsafeRawPointer(pointer)).takeUnretainedValue()
}
func release<T: AnyObject>(_ pointer: OpaquePointer, as _: T.Type) {
    Unmanaged<T>.fromOpaque(UnsafeRawPointer(pointer)).release()
}
