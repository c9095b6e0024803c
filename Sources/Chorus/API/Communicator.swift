import ChorusAlgorithms
import ChorusProtocol
import Dispatch
import Synchronization

/// A peer's handle on a Chorus group: membership (`rank`, `worldSize`, `epoch`, `updateTopology()`)
/// and collectives. Calls are serialized; each exists blocking and `async` (the async form runs the
/// blocking one on this communicator's own dispatch queue, never on Swift's cooperative pool), and
/// each collective also as a start form that returns before its verdict (`startAllReduce`, ...).
///
/// Every collective has one outcome that every member sees: success with bit-identical output, or
/// the same `ChorusError` everywhere with the input restored. After a retryable error, call
/// `updateTopology()` and retry with the smaller (or larger) world.
public final class Communicator: Sendable {
    private let core: Core
    private let coreLock = Mutex<Void>(())
    private let statusBox = StatusBox()
    let queue = DispatchQueue(label: "chorus.communicator")

    struct Status: Sendable {
        var peerID: PeerID = 0
        var rank = 0
        var worldSize = 0
        var epoch: UInt64 = 0
        var pendingPeers = 0
        var leavingPeers = 0
        var members: [PeerID] = []
        var lastOperationID: UInt64 = 0
        var openConnections = 0
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
        let deadline = ContinuousClock.now + configuration.admissionTimeout
        while !(try Self.admitted(session, deadline: deadline)) {
            // Admitted, but a neighbour vanished while the ring formed: ask for the next epoch.
            try session.sendToMaster(.updateTopology(epoch: session.topology.epoch, minimumWorldSize: 1))
        }
        core = Core(session: session)
        transport = switch session.dataPath {
        case .tcp: .tcp
        case .rdma: .rdma
        case .shm: .shm
        }
        listenAddress = session.listenAddress.description
        peerGroup = configuration.peerGroup
        publishStatus(of: session)
    }

    /// Waits for a topology; false when it came but its ring could not be connected.
    private static func admitted(_ session: PeerSession, deadline: ContinuousClock.Instant) throws -> Bool {
        do {
            try session.awaitTopology(deadline: deadline)
            return true
        } catch ChorusError.topologyFailed(_) {
            return false
        }
    }

    /// Connects without blocking the caller's thread; see `init(master:configuration:)`.
    public static func connect(master: String? = nil, configuration: Configuration? = nil) async throws -> Communicator {
        try await offload(DispatchQueue(label: "chorus.connect")) { () throws in
            try Communicator(master: master, configuration: configuration)
        }
    }

    /// What carries this peer's collective data: `.tcp`, `.rdma` or `.shm` (`.auto` resolved).
    public let transport: TransportKind
    /// "host:port" where this peer listens for its neighbours (the address they dial; the port is
    /// taken from `Configuration.peerPorts` when set).
    public let listenAddress: String

    /// The peer group this communicator belongs to (`Configuration.peerGroup`).
    public let peerGroup: UInt32
    /// This peer's id within its peer group, stable for the life of the communicator.
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

    /// The connections this peer held open when its last call returned: the master's and the
    /// epoch's links (ring lanes, the mesh partners a power of two away in rank, and any mesh link a
    /// shared-state transfer dialed). A diagnostic; it grows as O(log n) with the world size.
    public var openConnectionCount: Int { statusBox.status.withLock { $0.openConnections } }

    /// A collective's checked arguments, bound to it: what it moves in the current epoch's session
    /// (nil: alone, done locally).
    typealias CollectivePlan = (Core, PeerSession) throws(ChorusError) -> OperationPlan?

    func withCore<Result>(_ body: (Core) throws -> Result) throws -> Result {
        let outcome: Swift.Result<Result, any Error> = coreLock.withLock { _ in
            // Every call may change the epoch, the members or the operation counter.
            defer { if let session = core.session { publishStatus(of: session) } }
            do {
                return .success(try body(core))
            } catch {
                return .failure(error)
            }
        }
        return try outcome.get()
    }

    /// `withCore` when no other call holds the communicator, else nil at once.
    func withCoreIfAvailable<Result>(_ body: (Core) throws -> Result) throws -> Result? {
        let outcome: Swift.Result<Result, any Error>? = coreLock.withLockIfAvailable { _ in
            defer { if let session = core.session { publishStatus(of: session) } }
            do {
                return .success(try body(core))
            } catch {
                return .failure(error)
            }
        }
        return try outcome?.get()
    }

    /// Runs after every call: the member list is made anew only when it changed (an array made on
    /// each collective's return path was part of its time).
    private func publishStatus(of session: PeerSession) {
        statusBox.status.withLock {
            let topology = session.topology
            if !$0.members.elementsEqual(topology.members.lazy.map(\.id)) { $0.members = topology.members.map(\.id) }
            $0.peerID = session.peerID
            $0.rank = session.rank
            $0.worldSize = topology.members.count
            $0.epoch = topology.epoch
            $0.lastOperationID = session.nextOpID - 1
            $0.openConnections = session.engine.connectionCount
        }
    }

    // MARK: - Membership

    /// A safe point: lets the master admit waiting peers and drop lost ones, then connects the ring
    /// of the new epoch. Every member must call it; it returns when the new epoch is ready.
    /// - Parameters:
    ///   - minimumWorldSize: wait until at least this many peers (members plus admitted waiting
    ///     peers) can form the new epoch.
    ///   - admitting: false re-forms the current members only (lost ones dropped) and leaves
    ///     waiting peers waiting, unless every other member admits: a retry after a failure that
    ///     should not pull a joiner into the middle of a step (PCCL's retry semantics).
    /// - Throws: `topologyFailed` (retryable: call again), `masterUnreachable`, `evicted`, `timedOut`.
    public func updateTopology(minimumWorldSize: Int = 1, admitting: Bool = true) throws {
        try withCore { core throws in
            try core.reform(session: try core.openSession(), minimumWorldSize: minimumWorldSize, admitting: admitting)
        }
    }

    /// Async form of `updateTopology(minimumWorldSize:admitting:)`.
    public func updateTopology(minimumWorldSize: Int = 1, admitting: Bool = true) async throws {
        try await offload(queue) { () throws in try self.updateTopology(minimumWorldSize: minimumWorldSize, admitting: admitting) }
    }

    /// Reads what the master has sent since the last call, without waiting. The membership counts
    /// (`pendingPeerCount`, `topologyChangePending`) are otherwise updated while calls run, so a
    /// member that runs no collective (alone in its world, say) learns of a joiner this way.
    /// - Throws: `masterUnreachable` when the master is gone.
    public func pollMembership() throws {
        try withCore { core throws in
            let session = try core.openSession()
            session.drainEvents()
            if let error = session.masterLossError { throw error }
        }
    }

    /// Leaves the group gracefully at the next safe point (the others see only the ring re-forming).
    /// The communicator cannot be used afterwards.
    public func leave() throws {
        try withCore { core throws in
            let session = try core.openSession()
            core.settleAllInFlight()
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
    /// - Parameters:
    ///   - send: this peer's input, at least `count` elements.
    ///   - receive: where the reduction lands, at least `count` elements (may be `send` itself).
    ///   - count: elements per peer; every peer must pass the same.
    ///   - dataType: the element type; every peer must pass the same.
    ///   - op: the reduction; every peer must pass the same.
    ///   - algorithm: `.auto` (default) picks by size; every peer must pass the same.
    /// - Throws: `ChorusError`: `invalidArgument` if a buffer is shorter than `count` elements;
    ///   `aborted` (retryable; `send` intact, and restored too when in place);
    ///   `topologyUpdateRequired`; `masterUnreachable`; `evicted`.
    public func allReduce(send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer,
                          count: Int, dataType: DataType, op: ReduceOp = .sum,
                          algorithm: AllReduceAlgorithm = .auto) throws {
        try run(allReducePlan(send: send, receive: receive, count: count, dataType: dataType, op: op, algorithm: algorithm))
    }

    /// The all-reduce's arguments, checked and bound to the collective they run.
    func allReducePlan(send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, count: Int, dataType: DataType,
                       op: ReduceOp, algorithm: AllReduceAlgorithm) throws -> CollectivePlan {
        let bytes = try checkedBytes(count, dataType, send.count, receive.count, "send", "receive")
        try checkNoPartialOverlap(send, bytes, receive, bytes)
        return { core, session in
            core.allReducePlan(session: session, input: send.baseAddress ?? UnsafeRawPointer(placeholder),
                               output: receive.baseAddress ?? placeholder, count: count, dataType: dataType, op: op, algorithm: algorithm)
        }
    }

    /// All-reduces a buffer in place.
    public func allReduce(inPlace buffer: UnsafeMutableRawBufferPointer, count: Int, dataType: DataType,
                          op: ReduceOp = .sum, algorithm: AllReduceAlgorithm = .auto) throws {
        try allReduce(send: UnsafeRawBufferPointer(buffer), receive: buffer, count: count, dataType: dataType,
                      op: op, algorithm: algorithm)
    }

    /// All-reduces an array in place.
    public func allReduce<Element: ChorusElement>(_ values: inout [Element], op: ReduceOp = .sum,
                                                  algorithm: AllReduceAlgorithm = .auto) throws {
        let count = values.count
        try values.withUnsafeMutableBytes { buffer in
            try allReduce(inPlace: buffer, count: count, dataType: Element.dataType, op: op, algorithm: algorithm)
        }
    }

    /// All-reduces an array out of place.
    /// - Returns: the reduced values; `values` is untouched.
    public func allReduce<Element: ChorusElement>(_ values: [Element], op: ReduceOp = .sum,
                                                  algorithm: AllReduceAlgorithm = .auto) throws -> [Element] {
        try [Element](unsafeUninitializedCapacity: values.count) { output, initialized in
            try values.withUnsafeBytes { input in
                try allReduce(send: input, receive: UnsafeMutableRawBufferPointer(output), count: values.count,
                              dataType: Element.dataType, op: op, algorithm: algorithm)
            }
            initialized = values.count
        }
    }

    /// Async, in place on an array. The array is moved to the communicator's queue and back, not copied.
    public func allReduce<Element: ChorusElement>(_ values: inout [Element], op: ReduceOp = .sum,
                                                  algorithm: AllReduceAlgorithm = .auto) async throws {
        let box = ArrayBox(values)
        values = []
        defer { values = box.values }
        try await offload(queue) { () throws in try self.allReduce(&box.values, op: op, algorithm: algorithm) }
    }

    /// Async, out of place on an array.
    public func allReduce<Element: ChorusElement>(_ values: [Element], op: ReduceOp = .sum,
                                                  algorithm: AllReduceAlgorithm = .auto) async throws -> [Element] {
        try await offload(queue) { () throws in try self.allReduce(values, op: op, algorithm: algorithm) }
    }

    /// Async form of the raw-buffer all-reduce. The buffers must stay valid until it returns.
    public func allReduce(send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer,
                          count: Int, dataType: DataType, op: ReduceOp = .sum,
                          algorithm: AllReduceAlgorithm = .auto) async throws {
        nonisolated(unsafe) let send = send, receive = receive
        try await offload(queue) { () throws in
            try self.allReduce(send: send, receive: receive, count: count, dataType: dataType, op: op, algorithm: algorithm)
        }
    }

    // MARK: - Other collectives

    /// Reduce-scatter: `send` holds `worldSize` blocks of `count` elements; block `rank` of their
    /// reduction lands in `receive` (`count` elements). Ring algorithm.
    /// - Throws: as `allReduce`; on an abort `send` is intact and `receive` unspecified.
    public func reduceScatter(send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer,
                              count: Int, dataType: DataType, op: ReduceOp = .sum) throws {
        try run(reduceScatterPlan(send: send, receive: receive, count: count, dataType: dataType, op: op))
    }

    func reduceScatterPlan(send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, count: Int, dataType: DataType,
                           op: ReduceOp) throws -> CollectivePlan {
        let n = worldSize
        _ = try checkedBytes(count * n, dataType, send.count, receive.count * n, "send", "receive (times the world size)")
        try checkNoPartialOverlap(send, count * n * dataType.size, receive, count * dataType.size)
        return { core, session in
            core.reduceScatterPlan(session: session, input: send.baseAddress ?? UnsafeRawPointer(placeholder),
                                   output: receive.baseAddress ?? placeholder, count: count, dataType: dataType, op: op)
        }
    }

    /// Reduce-scatter on arrays: `values.count` must be a multiple of the world size.
    /// - Returns: this rank's block of the reduction.
    public func reduceScatter<Element: ChorusElement>(_ values: [Element], op: ReduceOp = .sum) throws -> [Element] {
        let n = worldSize
        guard values.count % n == 0 else {
            throw ChorusError.invalidArgument("\(values.count) elements do not split into \(n) equal blocks")
        }
        let count = values.count / n
        return try [Element](unsafeUninitializedCapacity: count) { output, initialized in
            try values.withUnsafeBytes { input in
                try reduceScatter(send: input, receive: UnsafeMutableRawBufferPointer(output), count: count,
                                  dataType: Element.dataType, op: op)
            }
            initialized = count
        }
    }

    /// All-gather: every rank's `count` elements of `send` land in block `rank` of `receive`
    /// (`worldSize` blocks). Ring algorithm.
    public func allGather(send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer,
                          count: Int, dataType: DataType) throws {
        try run(allGatherPlan(send: send, receive: receive, count: count, dataType: dataType))
    }

    func allGatherPlan(send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, count: Int,
                       dataType: DataType) throws -> CollectivePlan {
        let n = worldSize
        _ = try checkedBytes(count * n, dataType, send.count * n, receive.count, "send (times the world size)", "receive")
        try checkNoPartialOverlap(send, count * dataType.size, receive, count * n * dataType.size)
        return { core, session in
            core.allGatherPlan(session: session, input: send.baseAddress ?? UnsafeRawPointer(placeholder),
                               output: receive.baseAddress ?? placeholder, count: count, dataType: dataType)
        }
    }

    /// All-gather on arrays: every rank passes the same number of elements.
    /// - Returns: the concatenation of every rank's values, in rank order.
    public func allGather<Element: ChorusElement>(_ values: [Element]) throws -> [Element] {
        let total = values.count * worldSize
        return try [Element](unsafeUninitializedCapacity: total) { output, initialized in
            try values.withUnsafeBytes { input in
                try allGather(send: input, receive: UnsafeMutableRawBufferPointer(output), count: values.count,
                              dataType: Element.dataType)
            }
            initialized = total
        }
    }

    /// Broadcast: `root`'s bytes replace everyone's (pipelined down the ring).
    /// - Throws: as `allReduce`; on an abort every buffer is as it was before the call.
    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws {
        try run(broadcastPlan(buffer, root: root))
    }

    func broadcastPlan(_ buffer: UnsafeMutableRawBufferPointer, root: Int) -> CollectivePlan {
        { core, session throws(ChorusError) in
            try core.broadcastPlan(session: session, buffer: buffer.baseAddress ?? placeholder, bytes: buffer.count, root: root)
        }
    }

    /// Broadcast of an array: every rank passes an array of the root's length.
    public func broadcast<Element: ChorusElement>(_ values: inout [Element], root: Int) throws {
        try values.withUnsafeMutableBytes { try broadcast($0, root: root) }
    }

    // MARK: - All-Scan

    /// All-Scan (ZeCO): rank p gets the fold of the states of ranks before it (`exclusive`; rank 0
    /// gets the operator's identity) and that fold combined with its own state (`inclusive`).
    /// `reverse` folds from the last rank down (the backward pass).
    /// - Parameters:
    ///   - state: this rank's `count` elements (read only).
    ///   - count: elements of the state; every rank must pass the same.
    ///   - dataType: the element type; every rank must pass the same.
    ///   - op: `.affine` reads elements as `h -> g*h + s`: `decay` holds `decayCount` elements, a leading
    ///     prefix of the state's shape (so `count` is a multiple of it), broadcast over the rest;
    ///     float dtypes only. A decay of 0 resets the scan.
    ///   - decay: this rank's decay for `.affine` (nil otherwise).
    ///   - decayCount: how many elements `decay` holds.
    ///   - exclusive: `count` elements for the fold of the ranks before this one, or nil when not wanted.
    ///   - inclusive: `count` elements for that fold combined with this rank's state, or nil.
    ///   - reverse: fold from the last rank down (the backward pass).
    ///   - blocks: how many pieces pipeline down the chain; nil picks from the cost model. Every
    ///     rank must pass the same; the result is bit-identical for every value.
    ///   - algorithm: `.auto` (default) picks by size; every rank must pass the same.
    /// - Throws: `ChorusError` as `allReduce`; on an abort the outputs are unspecified.
    public func allScan(state: UnsafeRawBufferPointer, count: Int, dataType: DataType, op: ScanOperator = .sum,
                        decay: UnsafeRawBufferPointer? = nil, decayCount: Int = 1,
                        exclusive: UnsafeMutableRawBufferPointer?, inclusive: UnsafeMutableRawBufferPointer?,
                        reverse: Bool = false, blocks: Int? = nil, algorithm: ScanAlgorithm = .auto) throws {
        try run(allScanPlan(state: state, count: count, dataType: dataType, op: op, decay: decay, decayCount: decayCount,
                            exclusive: exclusive, inclusive: inclusive, reverse: reverse, blocks: blocks, algorithm: algorithm))
    }

    func allScanPlan(state: UnsafeRawBufferPointer, count: Int, dataType: DataType, op: ScanOperator,
                     decay: UnsafeRawBufferPointer?, decayCount: Int, exclusive: UnsafeMutableRawBufferPointer?,
                     inclusive: UnsafeMutableRawBufferPointer?, reverse: Bool, blocks: Int?,
                     algorithm: ScanAlgorithm) throws -> CollectivePlan {
        let bytes = try checkedBytes(count, dataType, state.count, min(exclusive?.count ?? .max, inclusive?.count ?? .max),
                                     "state", "outputs")
        if op == .affine {
            guard [.float32, .float64, .float16, .bfloat16].contains(dataType) else {
                throw ChorusError.invalidArgument("the affine scan needs a float dtype, not \(dataType)")
            }
            guard decayCount >= 1, count % decayCount == 0, (decay?.count ?? 0) >= decayCount * dataType.size else {
                throw ChorusError.invalidArgument("decay of \(decayCount) elements must divide the state's \(count) and fit its buffer")
            }
        }
        if let blocks, blocks < 1 { throw ChorusError.invalidArgument("blocks must be at least 1") }
        for output in [exclusive, inclusive].compactMap({ $0 }) { try checkNoPartialOverlap(state, bytes, output, bytes) }
        return { core, session in
            core.allScanPlan(session: session, state: state.baseAddress ?? UnsafeRawPointer(placeholder), decay: decay?.baseAddress,
                             decayCount: decayCount, count: count, dataType: dataType, op: op, reverse: reverse,
                             blocks: blocks, algorithm: algorithm, exclusive: exclusive?.baseAddress,
                             inclusive: inclusive?.baseAddress)
        }
    }

    /// All-Scan on arrays. `decay` is used by `.affine` only (its count divides `state.count`).
    /// - Returns: this rank's exclusive and inclusive results.
    public func allScan<Element: ChorusElement>(_ state: [Element], op: ScanOperator = .sum, decay: [Element] = [],
                                                reverse: Bool = false, blocks: Int? = nil,
                                                algorithm: ScanAlgorithm = .auto) throws
        -> (exclusive: [Element], inclusive: [Element]) {
        var exclusive = [Element](), inclusive = [Element]()
        exclusive.reserveCapacity(state.count)
        inclusive = try [Element](unsafeUninitializedCapacity: state.count) { incl, inclCount in
            exclusive = try [Element](unsafeUninitializedCapacity: state.count) { excl, exclCount in
                try state.withUnsafeBytes { s in
                    try decay.withUnsafeBytes { d in
                        try allScan(state: s, count: state.count, dataType: Element.dataType, op: op,
                                    decay: op == .affine ? d : nil, decayCount: max(1, decay.count),
                                    exclusive: UnsafeMutableRawBufferPointer(excl), inclusive: UnsafeMutableRawBufferPointer(incl),
                                    reverse: reverse, blocks: blocks, algorithm: algorithm)
                    }
                }
                exclCount = state.count
            }
            inclCount = state.count
        }
        return (exclusive, inclusive)
    }

    /// Async All-Scan on arrays: start it, compute what does not need the result, then await it.
    public func allScan<Element: ChorusElement>(_ state: [Element], op: ScanOperator = .sum, decay: [Element] = [],
                                                reverse: Bool = false, blocks: Int? = nil,
                                                algorithm: ScanAlgorithm = .auto) async throws
        -> (exclusive: [Element], inclusive: [Element]) {
        try await offload(queue) { () throws in
            try self.allScan(state, op: op, decay: decay, reverse: reverse, blocks: blocks, algorithm: algorithm)
        }
    }

    /// Returns once every member has called it (one verdict round trip, no data).
    public func barrier() throws {
        try run { core, session in core.barrierPlan(session: session) }
    }

    /// Runs a collective to its verdict.
    func run(_ plan: CollectivePlan) throws {
        try withCore { core throws in try core.run { session throws(ChorusError) in try plan(core, session) } }
    }

    /// Async form of `barrier()`.
    public func barrier() async throws {
        try await offload(queue) { () throws in try self.barrier() }
    }

    func checkedBytes(_ count: Int, _ dataType: DataType, _ sendBytes: Int, _ receiveBytes: Int,
                              _ sendName: String, _ receiveName: String) throws -> Int {
        let bytes = count * dataType.size
        guard count >= 0 else { throw ChorusError.invalidArgument("negative count \(count)") }
        guard sendBytes >= bytes, receiveBytes >= bytes else {
            throw ChorusError.invalidArgument("\(sendName) (\(sendBytes) bytes) and \(receiveName) (\(receiveBytes) bytes) cannot hold \(count) \(dataType) elements")
        }
        return bytes
    }

    /// The two extents must be the same memory or disjoint.
    func checkNoPartialOverlap(_ send: UnsafeRawBufferPointer, _ sendBytes: Int,
                                       _ receive: UnsafeMutableRawBufferPointer, _ receiveBytes: Int) throws {
        if sendBytes > 0, receiveBytes > 0, let s = send.baseAddress, let r = receive.baseAddress,
           s != UnsafeRawPointer(r), s < UnsafeRawPointer(r + receiveBytes), UnsafeRawPointer(r) < s + sendBytes {
            throw ChorusError.invalidArgument("send and receive buffers overlap without being the same memory")
        }
    }
}

/// Stands in for the base address of an empty buffer (never read or written).
nonisolated(unsafe) let placeholder = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)

private final class StatusBox: Sendable {
    let status = Mutex(Communicator.Status())
}

/// Moves an array across the hop to the communicator's queue without copying it.
final class ArrayBox<Element>: @unchecked Sendable {
    var values: [Element]
    init(_ values: [Element]) { self.values = values }
}

/// Runs a blocking body on `queue` and suspends until it finishes.
func offload<Result: Sendable>(_ queue: DispatchQueue,
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

// MARK: - Shared state

extension Communicator {
    /// Makes every member's shared state bit-identical at a safe point; every member calls it.
    /// The master elects the state most members hold at the highest valid revision (see
    /// `SharedState`); outdated members receive it in place, striped across every member that holds
    /// it, and verify its hash. When nobody is outdated this costs one small round trip.
    /// - Parameters:
    ///   - state: the tensors and revision to make identical; every member describes the same tensors.
    ///   - strategy: `.elect` (default), `.receiveOnly` (a joiner that must not vote), or `.sendOnly`
    ///     (fails the synchronization if this peer does not hold the elected state).
    ///   - progress: called on this thread as an outdated peer's chunks arrive.
    /// - Returns: what happened here (elected revision, whether this peer was outdated, what it received).
    /// - Throws: `ChorusError.aborted` with `stateMismatch` or `stateSenderOutdated` (not retryable),
    ///   or a retryable abort (a member lost before the transfer, every source lost, a hash that did
    ///   not verify): after a retryable abort an outdated peer's tensors may be partly written and its
    ///   revision is unchanged, so the retry after `updateTopology()` repairs them. An up-to-date
    ///   peer's tensors are never written. A source lost during the transfer does not fail it (the
    ///   next collective aborts once, so that the members re-form).
    @discardableResult
    public func synchronize(_ state: SharedState, strategy: SyncStrategy = .elect,
                            progress: ((SyncProgress) -> Void)? = nil) throws -> SyncResult {
        try withCore { core throws in try core.synchronize(state, strategy: strategy, progress: progress) }
    }

    /// Async form of `synchronize(_:strategy:progress:)`.
    @discardableResult
    public func synchronize(_ state: SharedState, strategy: SyncStrategy = .elect,
                            progress: (@Sendable (SyncProgress) -> Void)? = nil) async throws -> SyncResult {
        try await offload(queue) { () throws in try self.synchronize(state, strategy: strategy, progress: progress) }
    }
}
