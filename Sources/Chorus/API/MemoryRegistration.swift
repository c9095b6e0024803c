import ChorusTransport

/// Memory registered with a communicator for zero-copy RDMA sends (`Communicator.registerMemory`).
/// Frames sent from inside it go to the NIC straight from it, instead of being copied into the
/// link's registered slots; the region is made once per device, at the first send from it.
/// Over TCP it does nothing. Unregister it (or drop it) before freeing the memory.
public final class MemoryRegistration: @unchecked Sendable {
    private let communicator: Communicator
    private var handle: UInt64?

    init(communicator: Communicator, handle: UInt64?) {
        self.communicator = communicator
        self.handle = handle
    }

    /// Releases the registration; it waits for the collective in progress, if any, so no send
    /// still reads the memory. Calling it twice is harmless.
    public func unregister() {
        _ = try? communicator.withCore { _ in
            if let handle { TransportEngine.deregisterMemory(handle) }
            handle = nil
        }
    }

    /// Dropped without `unregister()`: released at once, without waiting for the communicator (a
    /// deinit may run while this thread holds it, e.g. inside a progress callback). A send still
    /// reading the memory would then fail its link (a retryable abort), never read freed memory
    /// through a stale registration.
    deinit {
        if let handle { TransportEngine.deregisterMemory(handle) }
    }
}

extension Communicator {
    /// Registers `buffer` for zero-copy RDMA sends; keep it allocated until the registration is
    /// unregistered or dropped. Long-lived buffers (gradients, weights) sent every step gain most.
    /// - Throws: `invalidArgument` for an empty buffer; `setupFailed` if the registration fails.
    public func registerMemory(_ buffer: UnsafeRawBufferPointer) throws -> MemoryRegistration {
        guard buffer.count > 0, buffer.baseAddress != nil else { throw ChorusError.invalidArgument("cannot register an empty buffer") }
        guard transport == .rdma else { return MemoryRegistration(communicator: self, handle: nil) }
        do {
            return MemoryRegistration(communicator: self, handle: try TransportEngine.registerMemory(buffer))
        } catch {
            throw ChorusError.setupFailed("cannot register \(buffer.count) bytes for RDMA: \(error)")
        }
    }
}
