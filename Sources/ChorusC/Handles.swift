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

/// A communicator and the serial queue every call on it goes through, blocking or not, so that
/// calls run in the order they were made and a non-blocking call never overtakes an earlier one.
final class CommHandle: @unchecked Sendable {
    let communicator: Communicator
    let queue = DispatchQueue(label: "chorus.c-abi.communicator")
    init(_ communicator: Communicator) { self.communicator = communicator }
}

final class StateHandle: @unchecked Sendable {
    let state: SharedState
    init(_ state: SharedState) { self.state = state }
}

/// A non-blocking call: its outcome once the queue has run it.
final class RequestHandle: @unchecked Sendable {
    private let outcome = Mutex<(any Error)??>(nil) // nil: running; .some(nil): succeeded
    private let done = DispatchSemaphore(value: 0)

    func finish(_ error: (any Error)?) {
        outcome.withLock { $0 = .some(error) }
        done.signal()
    }

    /// Nil while running; then the error, or `.some(nil)` for success.
    var result: (any Error)?? { outcome.withLock { $0 } }

    func wait() -> (any Error)? {
        done.wait()
        done.signal() // a later test or wait sees it done too
        return outcome.withLock { $0! }
    }
}

func retained<T: AnyObject>(_ object: T) -> OpaquePointer { OpaquePointer(Unmanaged.passRetained(object).toOpaque()) }
func borrowed<T: AnyObject>(_ pointer: OpaquePointer, as _: T.Type) -> T {
    Unmanaged<T>.fromOpaque(UnsafeRawPointer(pointer)).takeUnretainedValue()
}
func release<T: AnyObject>(_ pointer: OpaquePointer, as _: T.Type) {
    Unmanaged<T>.fromOpaque(UnsafeRawPointer(pointer)).release()
}
