import ChorusAlgorithms
import ChorusProtocol
import Dispatch
import Synchronization

/// A peer's handle on a Chorus group: membership (`rank`, `worldSize`, `epoch`, `updateTopology()`)
/// and collectives. Calls are serialized; each exists blocking and `async` (the async form runs the
/// blocking one on this communicator's own dispatch queue, never on Swift's cooperative pool).
///
/// Every collective has one outcome that every member sees: success with bit-identical output, or
/// the same `ChorusError` everywhere with the input restored. After a retryable error, call
/// `updateTopology()` and retry with the smaller (or larger) world.
public final class Communicator: Sendable {
    private let core: Core
    private let coreLock = Mutex<Void>(())
    private let statusBox = StatusBox()
    private let queue = DispatchQueue(label: "chorus.communicator")

    struct Status: Sendable {
        var peerID: PeerID = 0
        var rank = 0
        var worldSize = 0
        var epoch: UInt64 = 0
        var pendingPeers = 0
        var leavingPeers = 0
        var members: [PeerID] = []
        var lastOperationID: UInt64 = 0
    }

    /// Connects to a master, registers, and waits until admitted (blocking).
    /// - Parameters:
    ///   - master: "host:port" of the master; nil reads `CHORUS_MASTER`.
    ///   - configuration: nil means `Configuration.fromEnvironment()`.
    /// - Throws: `invalidArgument` (no or bad address), `masterUnreachable`, `timedOut` (not admitted
    ///   within `admissionTimeout`), `setupFailed`.
    public init(master: String? = nil, configuration: Configuration? = nil) throws {
        let configuration = if let configuration { configuration } else { try Configuration.fromEnvironment() }
        guard let address = master ?? Configuration.currentEnvironment()["CHORUS_MASTER"] else {
            throw ChorusError.invalidArgument("no master address: pass one or set CHORUS_MASTER=host:port")
        }
        let endpoint = try parseEndpoint(address, defaultPort: Master.defaultPort)
        let statusBox = self.statusBox
        let session = try PeerSession(master: endpoint, configuration: configuration) { joining, leaving in
            statusBox.status.withLock {
                $0.pendingPeers = joining
                $0.leavingPeers = leaving
            }
        }
        try session.awaitTopology(deadline: .now + configuration.admissionTimeout)
        core = Core(session: session)
        publishStatus(of: session)
    }

    /// Connects without blocking the caller's thread; see `init(master:configuration:)`.
    public static func connect(master: String? = nil, configuration: Configuration? = nil) async throws -> Communicator {
        try await offload(DispatchQueue(label: "chorus.connect")) { () throws in
            try Communicator(master: master, configuration: configuration)
        }
    }

    /// This peer's id, stable for the life of the communicator.
    public var peerID: PeerID { statusBox.status.withLock { $0.peerID } }
    /// This peer's position in the ring of the current epoch.
    public var rank: Int { statusBox.status.withLock { $0.rank } }
    /// Members in the current epoch.
    public var worldSize: Int { statusBox.status.withLock { $0.worldSize } }
    /// The members of the current epoch by peer id, in ring order (index = rank).
    public var members: [PeerID] { statusBox.status.withLock { $0.members } }
    /// The id the master knows the most recent collective of this epoch by (0 before the first);
    /// `(epoch, lastOperationID)` names one collective across the group, e.g. in logs.
    public var lastOperationID: UInt64 { statusBox.status.withLock { $0.lastOperationID } }
    /// The membership epoch; it grows with every topology update.
    public var epoch: UInt64 { statusBox.status.withLock { $0.epoch } }
    /// Peers waiting to be admitted at the next `updateTopology()`. Cheap: no round trip.
    public var pendingPeerCount: Int { statusBox.status.withLock { $0.pendingPeers } }
    /// Members waiting to leave at the next `updateTopology()`. Cheap: no round trip.
    public var leavingPeerCount: Int { statusBox.status.withLock { $0.leavingPeers } }
    /// True when peers wait to join or leave: a training loop checks this between steps and calls
    /// `updateTopology()` when it is set, so it need not re-form the ring every step.
    public var topologyChangePending: Bool { statusBox.status.withLock { $0.pendingPeers + $0.leavingPeers > 0 } }

    private func withCore<Result>(_ body: (Core) throws -> Result) throws -> Result {
        let outcome: Swift.Result<Result, any Error> = coreLock.withLock { _ in
            do {
                return .success(try body(core))
            } catch {
                return .failure(error)
            }
        }
        return try outcome.get()
    }

    private func publishStatus(of session: PeerSession) {
        statusBox.status.withLock {
            $0.peerID = session.peerID
            $0.rank = session.rank
            $0.worldSize = session.topology.members.count
            $0.epoch = session.topology.epoch
            $0.members = session.topology.members.map(\.id)
            $0.lastOperationID = session.nextOpID - 1
        }
    }

    // MARK: - Membership

    /// A safe point: lets the master admit waiting peers and drop lost ones, then connects the ring
    /// of the new epoch. Every member must call it; it returns when the new epoch is ready.
    /// - Parameter minimumWorldSize: wait until at least this many peers (members plus waiting
    ///   peers) can form the new epoch.
    /// - Throws: `topologyFailed` (retryable: call again), `masterUnreachable`, `evicted`, `timedOut`.
    public func updateTopology(minimumWorldSize: Int = 1) throws {
        try withCore { core throws in
            let session = try core.openSession()
            try session.sendToMaster(.updateTopology(epoch: session.topology.epoch,
                                                     minimumWorldSize: UInt32(clamping: minimumWorldSize)))
            do throws {
                try session.awaitTopology(deadline: .now + session.configuration.admissionTimeout)
            } catch {
                publishStatus(of: session)
                throw error
            }
            publishStatus(of: session)
        }
    }

    /// Async form of `updateTopology(minimumWorldSize:)`.
    public func updateTopology(minimumWorldSize: Int = 1) async throws {
        try await offload(queue) { () throws in try self.updateTopology(minimumWorldSize: minimumWorldSize) }
    }

    /// Leaves the group gracefully at the next safe point (the others see only the ring re-forming).
    /// The communicator cannot be used afterwards.
    public func leave() throws {
        try withCore { core throws in
            let session = try core.openSession()
            try session.sendToMaster(.leave(epoch: session.topology.epoch))
            try session.awaitLeave(deadline: .now + session.configuration.admissionTimeout)
            core.session = nil
        }
    }

    /// Async form of `leave()`.
    public func leave() async throws {
        try await offload(queue) { () throws in try self.leave() }
    }

    // MARK: - All-reduce

    /// All-reduces `count` elements from `send` into `receive` (out of place), or in place when both
    /// are the same memory.
    /// - Throws: `invalidArgument` if a buffer is shorter than `count` elements; `aborted` (retryable,
    ///   `send` intact, and `receive` restored too when in place); `topologyUpdateRequired`;
    ///   `masterUnreachable`.
    public func allReduce(send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer,
                          count: Int, dataType: DataType, op: ReduceOp = .sum) throws {
        let bytes = count * dataType.size
        guard count >= 0, send.count >= bytes, receive.count >= bytes else {
            throw ChorusError.invalidArgument("buffers of \(send.count) and \(receive.count) bytes cannot hold \(count) \(dataType) elements")
        }
        if bytes > 0, let s = send.baseAddress, let r = receive.baseAddress,
           s != UnsafeRawPointer(r), s < UnsafeRawPointer(r + bytes), UnsafeRawPointer(r) < s + bytes {
            throw ChorusError.invalidArgument("send and receive buffers overlap without being the same memory")
        }
        try withCore { core throws in
            defer { if let session = core.session { publishStatus(of: session) } }
            try core.allReduce(input: send.baseAddress, output: receive.baseAddress, count: count, dataType: dataType, op: op)
        }
    }

    /// All-reduces a buffer in place.
    public func allReduce(inPlace buffer: UnsafeMutableRawBufferPointer, count: Int, dataType: DataType,
                          op: ReduceOp = .sum) throws {
        try allReduce(send: UnsafeRawBufferPointer(buffer), receive: buffer, count: count, dataType: dataType, op: op)
    }

    /// All-reduces an array in place.
    public func allReduce<Element: ChorusElement>(_ values: inout [Element], op: ReduceOp = .sum) throws {
        let count = values.count
        try values.withUnsafeMutableBytes { buffer in
            try allReduce(inPlace: buffer, count: count, dataType: Element.dataType, op: op)
        }
    }

    /// All-reduces an array out of place.
    /// - Returns: the reduced values; `values` is untouched.
    public func allReduce<Element: ChorusElement>(_ values: [Element], op: ReduceOp = .sum) throws -> [Element] {
        try [Element](unsafeUninitializedCapacity: values.count) { output, initialized in
            try values.withUnsafeBytes { input in
                try allReduce(send: input, receive: UnsafeMutableRawBufferPointer(output), count: values.count,
                              dataType: Element.dataType, op: op)
            }
            initialized = values.count
        }
    }

    /// Async, in place on an array. The array is moved to the communicator's queue and back, not copied.
    public func allReduce<Element: ChorusElement>(_ values: inout [Element], op: ReduceOp = .sum) async throws {
        let box = ArrayBox(values)
        values = []
        defer { values = box.values }
        try await offload(queue) { () throws in try self.allReduce(&box.values, op: op) }
    }

    /// Async, out of place on an array.
    public func allReduce<Element: ChorusElement>(_ values: [Element], op: ReduceOp = .sum) async throws -> [Element] {
        try await offload(queue) { () throws in try self.allReduce(values, op: op) }
    }

    /// Async form of the raw-buffer all-reduce. The buffers must stay valid until it returns.
    public func allReduce(send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer,
                          count: Int, dataType: DataType, op: ReduceOp = .sum) async throws {
        nonisolated(unsafe) let send = send, receive = receive
        try await offload(queue) { () throws in
            try self.allReduce(send: send, receive: receive, count: count, dataType: dataType, op: op)
        }
    }
}

private final class StatusBox: Sendable {
    let status = Mutex(Communicator.Status())
}

/// Moves an array across the hop to the communicator's queue without copying it.
private final class ArrayBox<Element>: @unchecked Sendable {
    var values: [Element]
    init(_ values: [Element]) { self.values = values }
}

/// Runs a blocking body on `queue` and suspends until it finishes.
private func offload<Result: Sendable>(_ queue: DispatchQueue,
                                       _ body: @escaping @Sendable () throws -> Result) async throws -> Result {
    let outcome: Swift.Result<Result, any Error> = await withCheckedContinuation { continuation in
        queue.async {
            do {
                continuation.resume(returning: .success(try body()))
            } catch {
                continuation.resume(returning: .failure(error))
            }
        }
    }
    return try outcome.get()
}
