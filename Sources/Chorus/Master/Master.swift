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
    private let messages = Atomic<UInt64>(0)
    private let logger: Logger

    /// What the master currently sees.
    /// Over all peer groups: the highest epoch, every group's members and waiting peers; each
    /// group's own in `peerGroups` (with one group, the two agree).
    public struct MasterStatus: Sendable {
        public var epoch: UInt64 = 0
        public var worldSize = 0
        public var pendingPeers = 0
        public var peerGroups: [UInt32: PeerGroupStatus] = [:]

        public struct PeerGroupStatus: Sendable, Hashable {
            public var epoch: UInt64
            public var worldSize: Int
            public var pendingPeers: Int
        }
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
            let engine = try TransportEngine(settings: configuration.transportSettings(forMaster: true))
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

    /// The current epochs, world sizes and pending counts.
    public var currentStatus: MasterStatus { status.withLock { $0 } }

    /// The peers' messages the master has handled so far (registrations, calls, reports, commits,
    /// state digests; not the transport's heartbeats): its load, which the members keep to about
    /// one message each per half window of collectives they commit among themselves.
    public var messagesHandled: UInt64 { messages.load(ordering: .relaxed) }

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
        var groups = PeerGroups { holding in
            MasterStateMachine<ConnectionID>(naming: OperationDescriptor.apiNames, group: .random(in: 1 ... .max),
                                             holdingFirstAdmission: holding && adoptionWindow > .zero)
        }
        // Members of a group whose master this one replaces dial every 50 ms while they wait in a
        // call: within this hold they are back before a newcomer could form a group of its own.
        let firstAdmissionAt = ContinuousClock.now + min(adoptionWindow, Self.firstAdmissionHold)
        var forgiveness = StallForgiveness(window: adoptionWindow)
        var topologyEncoding = TopologyEncoding()
        /// A connection as the logs call it: the peer id (and peer group, but for group 0) and
        /// address once it registered.
        func name(_ connection: ConnectionID) -> String {
            guard let machine = groups.machine(of: connection), let id = machine.peerID(of: connection) else { return "an unregistered connection" }
            let group = groups.group(of: connection).map { $0 == 0 ? "" : " of peer group \($0)" } ?? ""
            return "peer \(id)\(group) (\(machine.address(of: connection).map(String.init(describing:)) ?? "?"))"
        }
        func groupName(_ id: UInt32) -> String { id == 0 ? "the group" : "peer group \(id)" }
        while !stopping.load(ordering: .relaxed) {
            gate.flushRefusals(logger: logger)
            prober.look(at: groups.membersHoldingUpTheSafePoint, engine: engine)
            let asked = prober.timeUntilNextLook(idle: .milliseconds(100))
            let event = engine.nextEvent(timeout: asked)
            if let stalled = forgiveness.waited(asked) {
                logger.warning("this master was stalled for \(stalled): members whose connections closed meanwhile have \(forgiveness.grace) to return")
            }
            var actions: [PeerGroups.Action] = []
            for connection in forgiveness.expired() where groups.machine(of: connection)?.peerID(of: connection) != nil {
                logger.notice("lost \(name(connection)): it did not return within \(forgiveness.grace) after this master's stall")
                actions += groups.connectionClosed(connection)
            }
            if ContinuousClock.now >= firstAdmissionAt { actions += groups.endFirstAdmissionHold() }
            let overdue = groups.endOverdueAdoptions(window: adoptionWindow, now: .now)
            for id in overdue.ended {
                logger.warning("re-adoption window of \(adoptionWindow) passed: \(groupName(id)) goes on without the members that did not return")
            }
            actions += overdue.actions
            switch event {
            case nil, .accepted:
                break
            case .fenceAnswered(let connection, let epoch, let opID, let vouched):
                actions += groups.fenceAnswered(connection, epoch: epoch, opID: opID, vouched: vouched)
            case .control(let connection, _, let payload):
                guard gate.admits(connection, payload, engine: engine, logger: logger) else { continue }
                do {
                    let message = try PeerToMaster(decoding: payload)
                    messages.add(1, ordering: .relaxed)
                    let epochBefore = groups.epoch(of: groups.group(of: connection) ?? PeerGroups.named(by: message))
                    actions += groups.received(message, from: connection)
                    // Identified: admitted in the engine (peers never send the master data frames).
                    if case .register(let address, let peerGroup) = message, let id = groups.machine(of: connection)?.peerID(of: connection) {
                        engine.admit(connection, allowData: false)
                        logger.info("peer \(id)\(peerGroup == 0 ? "" : " of peer group \(peerGroup)") registered (listening on \(address))")
                    }
                    if case .rejoin(let rejoin) = message, groups.machine(of: connection) != nil {
                        engine.admit(connection, allowData: false)
                        if groups.noteRejoin(of: connection, epochBefore: epochBefore, now: .now) {
                            logger.warning("peer \(rejoin.peer) of epoch \(rejoin.topology.epoch) returned after losing its master: re-adopting \(groupName(rejoin.peerGroup)) (waiting up to \(adoptionWindow) for the others)")
                        } else {
                            logger.info("peer \(rejoin.peer) rejoined")
                        }
                    }
                } catch {
                    logger.warning("\(name(connection)) sent a malformed message (\(error)); disconnecting it")
                    actions += groups.receivedMalformed(from: connection, reason: error.description)
                }
            case .failed(let connection, _) where groups.machine(of: connection)?.peerID(of: connection) != nil && forgiveness.forgive(connection):
                gate.forget(connection) // judged later: its member may be about to rejoin
            case .failed(let connection, let error):
                gate.forget(connection)
                let who = name(connection)
                actions += groups.connectionClosed(connection)
                if who != "an unregistered connection" {
                    let why = error.code == .idleTimeout && prober.probed(connection)
                        ? "it did not answer a probe within \(prober.answerWithin) while the others waited for it at the safe point" : "\(error)"
                    logger.notice("lost \(who): \(why)")
                }
            }
            for done in groups.finishedAdoptions(now: .now) {
                logger.warning("re-adopted \(groupName(done.group)) in \(done.took): epoch \(done.epoch), \(done.members) members")
            }
            // Published before the actions take effect: whoever sees a send or a close sees the state
            // behind it. The pending counts change only with the epochs or the registrations, so they
            // are counted only then (not on every begin and report).
            let changes = groups.takeChanges()
            if changes.changed {
                status.withLock { $0 = groups.status }
                for (id, epoch, members) in changes.formed {
                    logger.info("epoch \(epoch)\(id == 0 ? "" : " of peer group \(id)") formed with \(members) peers")
                }
            }
            var abortLogged = Set<UInt64>()
            for (action, epoch) in actions {
                switch action {
                case .send(let connection, let message):
                    try? engine.sendControl(connection, address: FrameAddress(epoch: epoch, opID: 0),
                                            payload: topologyEncoding.payload(for: message))
                    if case .verdict(let epoch, let opID, .aborted(let reason)) = message, abortLogged.insert(opID).inserted {
                        logger.warning("epoch \(epoch) operation \(opID) aborted: \(reason)")
                    }
                    if case .rejected(let why) = message {
                        logger.warning("cut off the connection from \(engine.remoteAddress(connection) ?? "?"): \(why)")
                    }
                case .fence(let connection, let epoch, let opID):
                    try? engine.fence(connection, epoch: epoch, opID: opID) // a failed send is the connection's failure event
                case .close(let connection):
                    engine.close(connection)
                    gate.forget(connection)
                    groups.forget(connection)
                }
            }
        }
    }
}

/// A topology goes to every member, and it names them all: encoding it once instead of once per
/// member keeps forming an epoch O(n) at the master, not O(n^2) (256 members: 102 ms of
/// CPU per formation before).
private struct TopologyEncoding {
    private var last: (topology: Topology, bytes: [UInt8])?

    mutating func payload(for message: MasterToPeer) -> [UInt8] {
        guard case .topology(let topology) = message else { return message.encoded() }
        // The copies sent to each member share one array, so this comparison is O(1) for them.
        if let last, last.topology == topology { return last.bytes }
        let bytes = message.encoded()
        last = (topology, bytes)
        return bytes
    }
}
