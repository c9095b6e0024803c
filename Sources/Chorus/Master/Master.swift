import ChorusProtocol
import ChorusTransport
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The membership master, embeddable in any process (`chorus-master` is this plus a command line).
/// It keeps the registry of peers, admits them at safe points, assigns ring order and epochs, and
/// issues the verdict of every collective. It never carries a collective's data.
public final class Master: Sendable {
    /// The default port of `chorus-master`: below Linux's ephemeral range (32768-60999), so no
    /// outgoing connection of another program can be holding it when the master starts.
    public static let defaultPort: UInt16 = 28148
    /// How long a new master admits nobody, in case a group that lost its master returns to it.
    static let firstAdmissionHold: Duration = .milliseconds(250)

    /// The host the master listens on.
    public let host: String
    /// The port the master listens on (the bound one, when 0 was asked for).
    public let port: UInt16
    /// "host:port", ready for `CHORUS_MASTER` or `Communicator(master:)`.
    public var endpoint: String { PeerAddress(host: host, port: port).description }

    /// The engine until `shutdown` drops it, which closes the listening socket and every connection
    /// at once (a new master can bind the port right after).
    private let engineHolder: Mutex<TransportEngine?>
    private let stopping = Atomic<Bool>(false)
    private let stopped = Mutex<Bool>(false)
    private let status = Mutex<MasterStatus>(MasterStatus())
    private let logger: Logger

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
    ///   - configuration: heartbeat and timeout settings, and the logger: `.info` logs every
    ///     registration, epoch and lost peer, `.warning` (the default) aborts and lost peers only.
    /// - Throws: `ChorusError.setupFailed` if the address cannot be bound (naming the call and why);
    ///   `invalidArgument` for a configuration `validate()` refuses.
    public init(host: String = "127.0.0.1", port: UInt16 = Master.defaultPort,
                configuration: Configuration = Configuration()) throws {
        try configuration.validate()
        var logger = configuration.logger
        logger[metadataKey: "role"] = "master"
        logger[metadataKey: "pid"] = "\(getpid())"
        do {
            let engine = try TransportEngine(settings: configuration.transportSettings)
            self.port = try engine.listen(host: host, port: port)
            engineHolder = Mutex(engine)
        } catch {
            logger.error("cannot listen on \(host):\(port): \(error)")
            throw ChorusError.setupFailed("master cannot listen on \(host):\(port): \(error)")
        }
        self.host = host
        self.logger = logger
        logger.info("listening on \(PeerAddress(host: host, port: self.port))")
        if configuration.secret == nil {
            logger.warning("no shared secret configured: anyone who can reach \(PeerAddress(host: host, port: self.port)) may join, read members' data and abort their operations (set CHORUS_SECRET_FILE)")
        }
        let gate = AcceptorGate(secret: configuration.sharedSecret, name: "this master")
        let prober = SafePointProber(answerWithin: configuration.probeTimeout)
        let window = configuration.masterWindow
        let thread = Thread { [self] in
            serve(gate: gate, prober: prober, adoptionWindow: window)
            stopped.withLock { $0 = true } // after serve's hold on the engine has ended
        }
        thread.start()
    }

    deinit { shutdown() }

    /// The current epoch, world size and pending count.
    public var currentStatus: MasterStatus { status.withLock { $0 } }

    /// Stops serving and closes the listening socket and every connection (peers try to reach a
    /// master again for their `masterWindow`, then see `masterUnreachable`). Returns after the
    /// serving thread has finished and the port is free.
    public func shutdown() {
        stopping.store(true, ordering: .relaxed)
        while !stopped.withLock({ $0 }) {
            sleepBriefly()
        }
        engineHolder.withLock { $0 = nil }
    }

    private func serve(gate initialGate: AcceptorGate, prober initialProber: SafePointProber, adoptionWindow: Duration) {
        guard let engine = engineHolder.withLock({ $0 }) else { return }
        var gate = initialGate
        var prober = initialProber
        var machine = MasterStateMachine<ConnectionID>(naming: OperationDescriptor.apiNames, group: .random(in: 1 ... .max),
                                                       holdingFirstAdmission: adoptionWindow > .zero)
        // Members of a group whose master this one replaces dial every 50 ms while they wait in a
        // call: within this hold they are back before a newcomer could form a group of its own.
        let firstAdmissionAt = ContinuousClock.now + min(adoptionWindow, Self.firstAdmissionHold)
        /// When the members of a group that lost its master started returning here.
        var adoptionStarted: ContinuousClock.Instant?
        var forgiveness = StallForgiveness(window: adoptionWindow)
        /// A connection as the logs call it: the peer id and address once it registered.
        func name(_ connection: ConnectionID) -> String {
            guard let id = machine.peerID(of: connection) else { return "an unregistered connection" }
            return "peer \(id) (\(machine.address(of: connection).map(String.init(describing:)) ?? "?"))"
        }
        while !stopping.load(ordering: .relaxed) {
            gate.flushRefusals(logger: logger)
            prober.look(at: machine.membersHoldingUpTheSafePoint, engine: engine)
            let asked = prober.timeUntilNextLook(idle: .milliseconds(100))
            let event = engine.nextEvent(timeout: asked)
            if let stalled = forgiveness.waited(asked) {
                logger.warning("this master was stalled for \(stalled): members whose connections closed meanwhile have \(forgiveness.grace) to return")
            }
            // The pending count changes only with the epoch or the registrations, so it is counted
            // only then (not on every begin and report).
            let before = (machine.epoch, machine.worldSize, machine.registeredCount)
            var actions: [MasterStateMachine<ConnectionID>.Action] = []
            for connection in forgiveness.expired() where machine.peerID(of: connection) != nil {
                logger.notice("lost \(name(connection)): it did not return within \(forgiveness.grace) after this master's stall")
                actions += machine.connectionClosed(connection)
            }
            if ContinuousClock.now >= firstAdmissionAt { actions += machine.endFirstAdmissionHold() }
            if let started = adoptionStarted, machine.isAdopting, ContinuousClock.now - started >= adoptionWindow {
                logger.warning("re-adoption window of \(adoptionWindow) passed: the group goes on without the members that did not return")
                actions += machine.endAdoption()
            }
            switch event {
            case nil, .accepted:
                break
            case .control(let connection, _, let payload):
                guard gate.admits(connection, payload, engine: engine, logger: logger) else { continue }
                do {
                    let message = try PeerToMaster(decoding: payload)
                    actions += machine.received(message, from: connection)
                    // Identified: admitted in the engine (peers never send the master data frames).
                    if case .register(let address) = message, let id = machine.peerID(of: connection) {
                        engine.admit(connection, allowData: false)
                        logger.info("peer \(id) registered (listening on \(address))")
                    }
                    if case .rejoin(let rejoin) = message, machine.knows(connection) {
                        engine.admit(connection, allowData: false)
                        if adoptionStarted == nil && (machine.isAdopting || before.0 == 0 && machine.epoch > 0) {
                            adoptionStarted = .now
                            logger.warning("peer \(rejoin.peer) of epoch \(rejoin.topology.epoch) returned after losing its master: re-adopting its group (waiting up to \(adoptionWindow) for the others)")
                        } else {
                            logger.info("peer \(rejoin.peer) rejoined")
                        }
                    }
                } catch {
                    logger.warning("\(name(connection)) sent a malformed message (\(error)); disconnecting it")
                    actions += machine.receivedMalformed(from: connection, reason: error.description)
                }
            case .failed(let connection, _) where machine.peerID(of: connection) != nil && forgiveness.forgive(connection):
                gate.forget(connection) // judged later: its member may be about to rejoin
            case .failed(let connection, let error):
                gate.forget(connection)
                let who = name(connection)
                actions += machine.connectionClosed(connection)
                if who != "an unregistered connection" {
                    let why = error.code == .idleTimeout && prober.probed(connection)
                        ? "it did not answer a probe within \(prober.answerWithin) while the others waited for it at the safe point" : "\(error)"
                    logger.notice("lost \(who): \(why)")
                }
            }
            if let started = adoptionStarted, !machine.isAdopting {
                adoptionStarted = nil
                logger.warning("re-adopted the group in \(ContinuousClock.now - started): epoch \(machine.epoch), \(machine.worldSize) members")
            }
            // Published before the actions take effect: whoever sees a send or a close sees the state behind it.
            let after = (machine.epoch, machine.worldSize, machine.registeredCount)
            if after != before {
                let pending = machine.pendingCount
                status.withLock { $0 = MasterStatus(epoch: after.0, worldSize: after.1, pendingPeers: pending) }
                if after.0 != before.0 { logger.info("epoch \(after.0) formed with \(after.1) peers") }
            }
            var abortLogged = Set<UInt64>()
            for action in actions {
                switch action {
                case .send(let connection, let message):
                    try? engine.sendControl(connection, address: FrameAddress(epoch: machine.epoch, opID: 0),
                                            payload: message.encoded())
                    if case .verdict(let epoch, let opID, .aborted(let reason)) = message, abortLogged.insert(opID).inserted {
                        logger.warning("epoch \(epoch) operation \(opID) aborted: \(reason)")
                    }
                    if case .rejected(let why) = message {
                        logger.warning("cut off the connection from \(engine.remoteAddress(connection) ?? "?"): \(why)")
                    }
                case .close(let connection):
                    engine.close(connection)
                    gate.forget(connection)
                }
            }
        }
    }
}
