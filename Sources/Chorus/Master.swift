import ChorusProtocol
import ChorusTransport
import Synchronization

/// The membership master, embeddable in any process (`chorus-master` is this plus a command line).
/// It keeps the registry of peers, admits them at safe points, assigns ring order and epochs, and
/// issues the verdict of every collective. It never carries a collective's data.
public final class Master: Sendable {
    /// The default port of `chorus-master`.
    public static let defaultPort: UInt16 = 48148

    /// The host the master listens on.
    public let host: String
    /// The port the master listens on (the bound one, when 0 was asked for).
    public let port: UInt16
    /// "host:port", ready for `CHORUS_MASTER` or `Communicator(master:)`.
    public var endpoint: String { PeerAddress(host: host, port: port).description }

    private let engine: TransportEngine
    private let stopping = Atomic<Bool>(false)
    private let stopped = Mutex<Bool>(false)
    private let status = Mutex<MasterStatus>(MasterStatus())
    private let log: (@Sendable (String) -> Void)?

    /// What the master currently sees.
    public struct MasterStatus: Sendable {
        public var epoch: UInt64 = 0
        public var worldSize = 0
        public var pendingPeers = 0
    }

    /// Starts listening and serving on a background thread.
    /// - Parameters:
    ///   - host: listening address; loopback by default, "0.0.0.0" only when asked for.
    ///   - port: listening port; 0 picks an ephemeral one.
    ///   - configuration: heartbeat and timeout settings.
    ///   - log: called with one line per membership change, or nil for silence.
    /// - Throws: `ChorusError.setupFailed` if the address cannot be bound.
    public init(host: String = "127.0.0.1", port: UInt16 = Master.defaultPort,
                configuration: Configuration = Configuration(),
                log: (@Sendable (String) -> Void)? = nil) throws {
        do {
            engine = try TransportEngine(settings: configuration.transportSettings)
            self.port = try engine.listen(host: host, port: port)
        } catch {
            throw ChorusError.setupFailed("master cannot listen on \(host):\(port): \(error)")
        }
        self.host = host
        self.log = log
        let thread = Thread { [self] in serve() }
        thread.start()
    }

    deinit { shutdown() }

    /// The current epoch, world size and pending count.
    public var currentStatus: MasterStatus { status.withLock { $0 } }

    /// Stops serving: every peer's master connection closes (they see `masterUnreachable`).
    /// Returns after the serving thread has finished.
    public func shutdown() {
        stopping.store(true, ordering: .relaxed)
        while !stopped.withLock({ $0 }) {
            sleepBriefly()
        }
    }

    private func serve() {
        var machine = MasterStateMachine<ConnectionID>()
        while !stopping.load(ordering: .relaxed) {
            guard let event = engine.nextEvent(timeout: .milliseconds(100)) else { continue }
            let before = (machine.epoch, machine.worldSize, machine.pendingCount)
            let actions: [MasterStateMachine<ConnectionID>.Action]
            switch event {
            case .accepted:
                actions = []
            case .control(let connection, _, let payload):
                do {
                    actions = machine.received(try PeerToMaster(decoding: payload), from: connection)
                } catch {
                    log?("master: \(connection) sent a malformed message (\(error)); disconnecting it")
                    actions = machine.receivedMalformed(from: connection, reason: error.description)
                }
            case .failed(let connection, let error):
                actions = machine.connectionClosed(connection)
                if !actions.isEmpty { log?("master: lost \(connection): \(error)") }
            }
            for action in actions {
                switch action {
                case .send(let connection, let message):
                    try? engine.sendControl(connection, address: FrameAddress(epoch: machine.epoch, opID: 0),
                                            payload: message.encoded())
                    if case .verdict(_, let opID, .aborted(let reason)) = message {
                        log?("master: epoch \(machine.epoch) op \(opID) aborted for \(connection): \(reason)")
                    }
                case .close(let connection):
                    engine.close(connection)
                }
            }
            let after = (machine.epoch, machine.worldSize, machine.pendingCount)
            if after != before {
                status.withLock { $0 = MasterStatus(epoch: after.0, worldSize: after.1, pendingPeers: after.2) }
                if after.0 != before.0 { log?("master: epoch \(after.0) formed with \(after.1) peers") }
            }
        }
        stopped.withLock { $0 = true }
    }
}
