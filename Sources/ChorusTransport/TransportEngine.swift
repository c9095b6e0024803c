import CChorusTransport

/// Identifies one connection of an engine. Never reused within an engine.
public struct ConnectionID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public var description: String { "conn#\(rawValue)" }
}

/// Where a frame belongs: the membership epoch, the operation, and a tag the algorithm assigns.
public struct FrameAddress: Hashable, Sendable {
    public var epoch: UInt64
    public var opID: UInt64
    public var tag: UInt32
    public init(epoch: UInt64, opID: UInt64, tag: UInt32 = 0) {
        self.epoch = epoch
        self.opID = opID
        self.tag = tag
    }
}

/// Knobs of one engine; `Chorus.Configuration` fills them.
public struct TransportSettings: Sendable {
    public var heartbeatInterval: Duration
    public var idleTimeout: Duration
    public var maxControlBytes: Int
    public var maxQueuedEvents: Int
    public var socketBufferBytes: Int
    public var spinWait: Duration
    /// An accepted connection not admitted (`admit`) by then is failed; `.zero`: accepted connections
    /// start admitted, data allowed (no identification stage).
    public var handshakeTimeout: Duration
    /// Accepted connections not yet admitted; past it the oldest is failed (`.handshakeFlood`). 0: no bound.
    public var maxUnadmitted: Int
    /// Control payloads being read or waiting for the owner, over every connection; a frame that
    /// would pass it fails its connection (`.controlBudget`). 0: no bound.
    public var maxBufferedControlBytes: Int
    /// A connection silent for this many times the longest silence its sender usually keeps (but at
    /// least `suspicionMinimum`) fails before the idle timeout. 0: the idle timeout alone.
    public var suspicionMultiple: Int
    public var suspicionMinimum: Duration

    public init(heartbeatInterval: Duration = .milliseconds(500), idleTimeout: Duration = .seconds(5),
                maxControlBytes: Int = 1 << 20, maxQueuedEvents: Int = 4096, socketBufferBytes: Int = 0,
                spinWait: Duration = .zero, handshakeTimeout: Duration = .zero, maxUnadmitted: Int = 0,
                maxBufferedControlBytes: Int = 0, suspicionMultiple: Int = 0, suspicionMinimum: Duration = .zero) {
        self.heartbeatInterval = heartbeatInterval
        self.idleTimeout = idleTimeout
        self.maxControlBytes = maxControlBytes
        self.maxQueuedEvents = maxQueuedEvents
        self.socketBufferBytes = socketBufferBytes
        self.spinWait = spinWait
        self.handshakeTimeout = handshakeTimeout
        self.maxUnadmitted = maxUnadmitted
        self.maxBufferedControlBytes = maxBufferedControlBytes
        self.suspicionMultiple = suspicionMultiple
        self.suspicionMinimum = suspicionMinimum
    }
}

/// Something the engine tells its owner.
public enum TransportEvent: Sendable, Equatable {
    /// A peer connected to one of our listeners.
    case accepted(ConnectionID)
    /// A control frame arrived.
    case control(ConnectionID, FrameAddress, [UInt8])
    /// A connection failed (closed by the peer, timed out, or violated the protocol) and is closed.
    case failed(ConnectionID, TransportError)
    /// The other end answered the fence this end sent (`fence`): `vouched` when it had vouched for
    /// the operation already, otherwise it never will.
    case fenceAnswered(ConnectionID, epoch: UInt64, opID: UInt64, vouched: Bool)
}

/// How waiting for a request ended.
public enum RequestWait: Sendable, Equatable {
    case completed
    case failed(TransportError)
    /// The deadline passed; the request is still live.
    case timedOut
    /// An event is waiting for the owner; the request is still live.
    case interrupted
}

/// A posted send or receive. Its buffer must stay valid until `wait` reports it finished.
public final class TransportRequest: @unchecked Sendable {
    fileprivate var handle: OpaquePointer?
    fileprivate var outcome: RequestWait = .completed

    fileprivate init(_ handle: OpaquePointer) { self.handle = handle }

    /// True once completed or failed (the C side has released it).
    public var isFinished: Bool { handle == nil }

    deinit { precondition(handle == nil, "TransportRequest dropped before it finished: its buffer may still be in use") }
}

/// Rounded up: a wait of 0.3 ms must block for up to 1 ms, not return at once (its caller would
/// call again and again, a busy loop that took a core from the other members).
private func milliseconds(_ d: Duration) -> Int32 {
    let (seconds, attoseconds) = d.components
    let perMillisecond: Int64 = 1_000_000_000_000_000
    let ms = seconds * 1000 + (attoseconds + perMillisecond - 1) / perMillisecond
    return Int32(clamping: max(0, ms))
}

/// An epoll-driven set of framed TCP connections: the C engine, owned.
///
/// One owner thread at a time posts, waits and takes events; the engine's own I/O thread does the rest.
public final class TransportEngine: @unchecked Sendable {
    private let engine: OpaquePointer

    /// Starts an engine and its I/O thread.
    /// - Throws: `TransportError` if the epoll set or thread cannot be created.
    public init(settings: TransportSettings = TransportSettings()) throws(TransportError) {
        var config = chorus_engine_config(
            heartbeat_interval_ms: UInt32(milliseconds(settings.heartbeatInterval)),
            idle_timeout_ms: UInt32(milliseconds(settings.idleTimeout)),
            max_control_bytes: UInt32(clamping: settings.maxControlBytes),
            max_queued_events: UInt32(clamping: settings.maxQueuedEvents),
            socket_buffer_bytes: Int32(clamping: settings.socketBufferBytes),
            spin_wait_us: UInt32(clamping: settings.spinWait.components.seconds * 1_000_000
                                 + settings.spinWait.components.attoseconds / 1_000_000_000_000),
            handshake_timeout_ms: UInt32(milliseconds(settings.handshakeTimeout)),
            max_unadmitted: UInt32(clamping: settings.maxUnadmitted),
            max_buffered_control_bytes: UInt64(clamping: settings.maxBufferedControlBytes),
            suspicion_multiple: UInt32(clamping: settings.suspicionMultiple),
            suspicion_min_ms: UInt32(milliseconds(settings.suspicionMinimum)))
        var created: OpaquePointer?
        try check(chorus_engine_create(&config, &created))
        engine = created!
    }

    deinit { chorus_engine_destroy(engine) }

    /// Where a connection's data frames travel. Control frames, heartbeats and liveness always use
    /// its TCP stream.
    public enum DataPath: Sendable {
        /// On the TCP stream itself.
        case tcp
        /// On an RDMA queue pair to the same address and port (rdma_cm, reliable connected).
        case rdma
        /// In rings of shared memory when both ends share a host (the dialer offers a segment and
        /// waits for the answer within its connect timeout), else on the TCP stream.
        case shm

        var kind: Int32 {
            switch self {
            case .tcp: Int32(CHORUS_PATH_TCP.rawValue)
            case .rdma: Int32(CHORUS_PATH_RDMA.rawValue)
            case .shm: Int32(CHORUS_PATH_SHM.rawValue)
            }
        }
    }

    /// Listens on `host` and the first free port of `port...lastPort` (port 0 picks an ephemeral
    /// port; a `lastPort` below `port` means `port` alone). Failures name the call and the errno text.
    /// - Parameter path: where accepted connections carry data frames (the dialer must use the same).
    /// - Returns: the bound port.
    public func listen(host: String, port: UInt16, lastPort: UInt16 = 0, path: DataPath = .tcp) throws(TransportError) -> UInt16 {
        var bound: UInt16 = 0
        try checkSetUp(chorus_engine_listen(engine, host, port, lastPort, 128, path.kind, &bound))
        return bound
    }

    /// Connects within `timeout`.
    /// - Parameter path: where the connection's data frames travel (`.rdma`: an RDMA link to the
    ///   same address, opened within the same timeout).
    public func connect(host: String, port: UInt16, timeout: Duration, path: DataPath = .tcp) throws(TransportError) -> ConnectionID {
        var id: UInt64 = 0
        try checkSetUp(chorus_engine_connect(engine, host, port, milliseconds(timeout), path.kind, &id))
        return ConnectionID(rawValue: id)
    }

    /// Registers memory for zero-copy RDMA sends (`chorus_rdma_register`): frames sent from inside it
    /// skip the copy into the link's slots. Keep it allocated, and send nothing from it, until
    /// `deregisterMemory`.
    /// - Returns: the handle for `deregisterMemory`.
    public static func registerMemory(_ buffer: UnsafeRawBufferPointer) throws(TransportError) -> UInt64 {
        var handle: UInt64 = 0
        try check(chorus_rdma_register(buffer.baseAddress, buffer.count, &handle))
        return handle
    }

    public static func deregisterMemory(_ handle: UInt64) {
        _ = chorus_rdma_deregister(handle)
    }

    /// Nil when RDMA can be used on this machine; otherwise why not (no libraries, a kernel without
    /// RDMA, no device).
    public static var rdmaUnavailableReason: String? {
        var why = [CChar](repeating: 0, count: 256)
        guard chorus_rdma_probe(&why, why.count) != 0 else { return nil }
        return String(decoding: why.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Marks an accepted connection as identified (its handshake checked): the handshake deadline
    /// stops applying. `allowData` false makes any data frame on it fail the connection with
    /// `.unexpectedData`. Connections this engine dialed are admitted already.
    public func admit(_ connection: ConnectionID, allowData: Bool) {
        _ = chorus_engine_admit(engine, connection.rawValue, allowData ? 1 : 0)
    }

    /// Where an accepted connection came from ("host:port"), for logs; nil for a dialed or closed one.
    public func remoteAddress(_ connection: ConnectionID) -> String? {
        var host = [CChar](repeating: 0, count: 64)
        var port: UInt16 = 0
        guard chorus_engine_remote_address(engine, connection.rawValue, &host, host.count, &port) == 0, port != 0 else { return nil }
        let text = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return text.contains(":") ? "[\(text)]:\(port)" : "\(text):\(port)"
    }

    /// The open connections, listeners left out.
    public var connectionCount: Int { chorus_engine_connection_count(engine) }

    /// Closes a connection; its pending requests finish with `.cancelled`. Closing twice is harmless.
    public func close(_ connection: ConnectionID) {
        _ = chorus_engine_close(engine, connection.rawValue)
    }

    /// Asks the peer on `connection` for a sign of life: unless something arrives on it within
    /// `answerWithin` (or its sender's usual silence, if longer), it fails with `idleTimeout`.
    /// A probe while one is unanswered keeps the earlier deadline.
    public func probe(_ connection: ConnectionID, answerWithin: Duration) throws(TransportError) {
        try check(chorus_engine_probe(engine, connection.rawValue, UInt32(milliseconds(answerWithin))))
    }

    /// Vouches on `connection` (the master's) for operation `opID` of `epoch`, before telling the
    /// other members this end is done with it; throws `.fenced` when the master's fence came first
    /// (`chorus_engine_vouch`). With `heardWithin` above zero it throws `.outOfTouch` when the master
    /// may have taken this end for dead: nothing heard from it for that long, the connection failed,
    /// or this process was held up lately.
    public func vouch(_ connection: ConnectionID, epoch: UInt64, opID: UInt64, heardWithin: Duration = .zero) throws(TransportError) {
        try check(chorus_engine_vouch(engine, connection.rawValue, epoch, opID, UInt32(milliseconds(heardWithin))))
    }

    /// Fences the member on `connection`: it will vouch for no operation of `epoch` from `opID` on,
    /// unless it already had; its answer comes as `.fenceAnswered`.
    public func fence(_ connection: ConnectionID, epoch: UInt64, opID: UInt64) throws(TransportError) {
        try check(chorus_engine_fence(engine, connection.rawValue, epoch, opID))
    }

    /// Queues a control frame (the payload is copied).
    public func sendControl(_ connection: ConnectionID, address: FrameAddress, payload: [UInt8]) throws(TransportError) {
        let status = payload.withUnsafeBytes {
            chorus_engine_send_control(engine, connection.rawValue, address.epoch, address.opID,
                                       $0.baseAddress, UInt32(clamping: $0.count))
        }
        try check(status)
    }

    /// Queues a control frame without writing it (the payload is copied): it leaves, in order, with
    /// the connection's next frame, at `flush`, or when a heartbeat is due, and replaces a frame
    /// queued this way that has not left (the newest says all).
    public func sendControlLater(_ connection: ConnectionID, address: FrameAddress, payload: [UInt8]) throws(TransportError) {
        let status = payload.withUnsafeBytes {
            chorus_engine_send_control_later(engine, connection.rawValue, address.epoch, address.opID,
                                             $0.baseAddress, UInt32(clamping: $0.count))
        }
        try check(status)
    }

    /// Writes what `sendControlLater` queued on `connection`, if anything.
    public func flush(_ connection: ConnectionID) {
        _ = chorus_engine_flush(engine, connection.rawValue)
    }

    /// Posts a data frame carrying `bytes`, which must stay valid until the request finishes.
    /// `withNextFrame`: on a connection whose data travels on its stream, the frame waits for the
    /// connection's next frame (or `flush`, or a heartbeat) and leaves in the same write
    /// (`chorus_engine_post_send_with_next`).
    public func postSend(_ connection: ConnectionID, address: FrameAddress, bytes: UnsafeRawBufferPointer,
                         withNextFrame: Bool = false) throws(TransportError) -> TransportRequest {
        guard bytes.count <= UInt32.max else { throw TransportError(code: .invalidArgument) }
        var request: OpaquePointer?
        let post = withNextFrame ? chorus_engine_post_send_with_next : chorus_engine_post_send
        try check(post(engine, connection.rawValue, address.epoch, address.opID, address.tag,
                       bytes.baseAddress, UInt32(bytes.count), &request))
        return TransportRequest(request!)
    }

    /// Posts a receive for the next data frame on `connection`; it must carry exactly `address` and
    /// `buffer.count` bytes, which land directly in `buffer`.
    public func postReceive(_ connection: ConnectionID, address: FrameAddress,
                            into buffer: UnsafeMutableRawBufferPointer) throws(TransportError) -> TransportRequest {
        guard buffer.count <= UInt32.max else { throw TransportError(code: .invalidArgument) }
        var request: OpaquePointer?
        try check(chorus_engine_post_recv(engine, connection.rawValue, address.epoch, address.opID, address.tag,
                                          buffer.baseAddress, UInt32(buffer.count), &request))
        return TransportRequest(request!)
    }

    /// Blocks (without spinning) until `request` finishes, `timeout` passes, or, when `interruptible`,
    /// an event is waiting. Waiting again on a finished request returns its outcome.
    public func wait(_ request: TransportRequest, timeout: Duration, interruptible: Bool) -> RequestWait {
        guard let handle = request.handle else { return request.outcome }
        let status = chorus_request_wait(engine, handle, milliseconds(timeout), interruptible ? 1 : 0)
        switch status {
        case CHORUS_ERR_TIMEDOUT.rawValue: return .timedOut
        case CHORUS_ERR_INTERRUPTED.rawValue: return .interrupted
        default:
            request.handle = nil
            request.outcome = status == 0 ? .completed : .failed(TransportError(status: status))
            return request.outcome
        }
    }

    /// The outcome of a request that has finished (a send written inline, a frame read with an earlier
    /// one), taken without waiting or a look at the sockets; nil while it is in flight.
    public func outcomeIfFinished(_ request: TransportRequest) -> RequestWait? {
        guard let handle = request.handle else { return request.outcome }
        guard chorus_request_done(handle) != 0 else { return nil }
        return wait(request, timeout: .zero, interruptible: false)
    }

    /// Takes the next event, waiting up to `timeout`; nil when none came.
    public func nextEvent(timeout: Duration) -> TransportEvent? {
        var event = chorus_event()
        guard chorus_engine_next_event(engine, milliseconds(timeout), &event) == 0 else { return nil }
        defer { chorus_event_release(&event) }
        let connection = ConnectionID(rawValue: event.conn)
        switch Int32(event.kind) {
        case Int32(CHORUS_EVENT_ACCEPTED.rawValue):
            return .accepted(connection)
        case Int32(CHORUS_EVENT_CONTROL.rawValue):
            let header = event.header
            let payload = [UInt8](UnsafeRawBufferPointer(start: event.payload, count: Int(header.length)))
            return .control(connection, FrameAddress(epoch: header.epoch, opID: header.op_id, tag: header.tag), payload)
        case Int32(CHORUS_EVENT_FENCE_ANSWER.rawValue):
            return .fenceAnswered(connection, epoch: event.header.epoch, opID: event.header.op_id, vouched: event.header.tag == 1)
        default:
            return .failed(connection, TransportError(status: event.status, systemErrno: event.sys_errno,
                                                      systemCall: event.sys_call.map { String(cString: $0) } ?? ""))
        }
    }
}
