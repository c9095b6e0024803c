import ChorusProtocol
import ChorusTransport
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// The I/O shell around a peer's control plane (`PeerStateMachine` in `ChorusProtocol`): it owns the
/// transport engine, feeds the machine the engine's events, authenticates inbound links, and carries
/// out the actions the machine returns. Not thread-safe: `Communicator` serializes every call.
/// Every wait of the session is `wait(until:blockingOn:_:)`, one loop with one deadline.
final class PeerSession {
    typealias Machine = PeerStateMachine

    let engine: TransportEngine
    let configuration: Configuration
    /// Where this peer listens for its neighbours (the address they dial).
    let listenAddress: PeerAddress
    let masterEndpoint: (host: String, port: UInt16)
    /// Where data links carry their frames (links to the master carry none).
    let dataPath: TransportEngine.DataPath
    let machine: Machine
    /// Inbound links authenticate here before their frames reach the machine.
    private var gate: AcceptorGate
    private let onMembershipPending: (_ joining: Int, _ leaving: Int) -> Void
    /// The configuration's logger with this process's identity: pid, then peer id, rank and epoch.
    private(set) var logger: Logger
    private var loggedIdentity: (peer: PeerID, epoch: UInt64) = (0, 0)

    /// Connects to the master, authenticates it when there is a secret, and registers; does not
    /// wait for admission.
    init(master endpoint: (host: String, port: UInt16), configuration: Configuration,
         onMembershipPending: @escaping (_ joining: Int, _ leaving: Int) -> Void) throws(ChorusError) {
        try configuration.validate()
        self.configuration = configuration
        self.onMembershipPending = onMembershipPending
        self.masterEndpoint = endpoint
        logger = configuration.logger
        logger[metadataKey: "pid"] = "\(getpid())"
        gate = AcceptorGate(secret: configuration.sharedSecret, name: "this peer")
        dataPath = try configuration.dataPath()
        let master: ConnectionID
        do {
            engine = try TransportEngine(settings: configuration.transportSettings())
            let ports = configuration.peerPorts ?? 0 ... 0
            let port = try engine.listen(host: configuration.bindHost, port: ports.lowerBound, lastPort: ports.upperBound, path: dataPath)
            listenAddress = PeerAddress(host: configuration.advertisedHost ?? configuration.bindHost, port: port)
        } catch {
            throw .setupFailed("cannot listen on \(configuration.bindHost)\(dataPath == .rdma ? " (with RDMA)" : ""): \(error)")
        }
        do {
            master = try engine.connect(host: endpoint.host, port: endpoint.port, timeout: configuration.connectTimeout)
        } catch {
            logger.error("cannot reach the master at \(endpoint.host):\(endpoint.port): \(error)")
            throw .masterUnreachable("\(endpoint.host):\(endpoint.port): \(error)")
        }
        logger.debug("connected to the master at \(endpoint.host):\(endpoint.port); listening on \(listenAddress)")
        let settings = Machine.Settings(
            lanes: configuration.connectionsPerPeer, maxQueuedPeerMessages: configuration.maxQueuedPeerMessages,
            recoveryWindow: max(configuration.masterWindow, min(configuration.peerTimeout, .seconds(3))),
            connectTimeout: configuration.connectTimeout, secret: configuration.sharedSecret,
            masterName: "the master at \(endpoint.host):\(endpoint.port)", peerGroup: configuration.peerGroup)
        machine = Machine(master: master.rawValue, listen: listenAddress, settings: settings)
        apply(machine.start())
        do {
            _ = try waitFor("the master's handshake", deadline: .now + configuration.handshakeTimeout) { machine.masterAuthenticated ? true : nil }
        } catch .timedOut {
            throw .masterUnreachable("\(settings.masterName) did not answer the handshake in time (paused or overloaded?)")
        }
    }

    // MARK: - What the machine knows

    var peerID: PeerID { machine.peerID }
    var topology: Topology { machine.topology }
    var rank: Int { machine.rank }
    var links: EpochLinks? { machine.links }
    var needsTopologyUpdate: Bool { machine.needsTopologyUpdate }
    var nextOpID: UInt64 { machine.nextOpID }
    var lastSyncedRevision: UInt64? {
        get { machine.lastSyncedRevision }
        set { machine.lastSyncedRevision = newValue }
    }
    func verdict(for opID: UInt64) -> Outcome? { machine.verdict(for: opID) }
    var masterConnection: ConnectionID { ConnectionID(rawValue: machine.master) }
    var latestMasterVerdict: UInt64 { machine.latestMasterVerdict }
    func mayCommitAmongMembers(_ opID: UInt64) -> Bool { machine.mayCommitAmongMembers(opID) }
    func committedAmongMembers(_ opID: UInt64) { machine.committedAmongMembers(opID) }
    /// Vouches for `opID` of `epoch` on the master connection (`TransportEngine.vouch`); false when
    /// the master fenced it first (or the connection is gone), which leaves the verdict to the master.
    /// `inTouch`: false as well when the master may have taken this member for dead (a pair's
    /// one-hop commit, `PairToken`): nothing heard from it for 2.5 heartbeat intervals (it sends one
    /// at least every 1.5, read within half an interval; it declares a member dead after 5 or more),
    /// or this process was held up lately.
    func vouch(for opID: UInt64, epoch: UInt64, inTouch: Bool = false) -> Bool {
        let heardWithin = inTouch ? configuration.heartbeatInterval * 5 / 2 : .zero
        return (try? engine.vouch(masterConnection, epoch: epoch, opID: opID, heardWithin: heardWithin)) != nil
    }
    func syncPlan(for opID: UInt64) -> SyncPlan? { machine.syncPlan(for: opID) }
    /// Why a link of the current epoch failed (the transport's error the machine was given).
    func linkFailure(_ connection: ConnectionNumber) -> TransportError? { machine.linkFailure(connection) as? TransportError }
    func takeOperationID() -> UInt64 { machine.takeOperationID() }
    func takePeerMessage(opID: UInt64) -> (connection: ConnectionNumber, message: PeerToPeer)? { machine.takePeerMessage(opID: opID) }

    /// The error for a lost master connection.
    var masterLossError: ChorusError? { machine.masterLoss.map(ChorusError.init) }

    // MARK: - Waiting

    /// The session's one wait: until `check` yields a value (returned) or `deadline` passes (nil),
    /// blocking in the engine meanwhile (on `request` when given, waking for events too) and handling
    /// every event, and dialing a lost master when it is time. `check` runs before every block, and
    /// its errors end the wait.
    func wait<T, E: Error>(until deadline: ContinuousClock.Instant, blockingOn request: TransportRequest? = nil,
                           _ check: () throws(E) -> T?) throws(E) -> T? {
        while true {
            if let value = try check() { return value }
            let now = ContinuousClock.now
            guard now < deadline else { return nil }
            let slice = min(deadline - now, machine.wakeDelay(now: now) ?? deadline - now)
            if let request {
                switch engine.wait(request, timeout: slice, interruptible: true) {
                case .interrupted, .timedOut: drainEvents()
                case .completed, .failed: break
                }
            } else if let event = engine.nextEvent(timeout: slice) {
                handle(event)
            }
            if machine.isRecovering { apply(machine.tick(now: .now)) }
        }
    }

    /// `wait` for a condition of the session: throws the lost master's error, or `timedOut` naming
    /// `what` at the deadline.
    func waitFor<T>(_ what: @autoclosure () -> String, deadline: ContinuousClock.Instant,
                    _ condition: () throws(ChorusError) -> T?) throws(ChorusError) -> T {
        let value = try wait(until: deadline) { () throws(ChorusError) -> T? in
            if let value = try condition() { return value }
            if let error = masterLossError { throw error }
            return nil
        }
        guard let value else { throw .timedOut("waiting for \(what())") }
        return value
    }

    /// Handles every event already queued, without blocking.
    func drainEvents() {
        while let event = engine.nextEvent(timeout: .zero) { handle(event) }
        if machine.isRecovering { apply(machine.tick(now: .now)) }
    }

    private func handle(_ event: TransportEvent) {
        switch event {
        case .accepted:
            break // identified by its hello
        case .control(let connection, let address, let payload):
            if machine.isInbound(connection.rawValue), !gate.admits(connection, payload, engine: engine, logger: logger) { return }
            apply(machine.received(frame: payload, on: connection.rawValue, epoch: address.epoch, opID: address.opID, now: .now))
        case .fenceAnswered:
            break // a member fences nobody (its engine fails a connection that answers a fence it never sent)
        case .failed(let connection, let error):
            gate.forget(connection)
            apply(machine.connectionFailed(connection.rawValue, error, silent: error.code == .idleTimeout, now: .now))
        }
    }

    // MARK: - Carrying out the machine's actions

    private func apply(_ actions: [Machine.Action], messagesToMasterLater: Bool = false) {
        updateLoggedIdentity()
        for action in actions { perform(action, messagesToMasterLater: messagesToMasterLater) }
    }

    /// The logger's metadata follows the machine's peer id, epoch and rank.
    private func updateLoggedIdentity() {
        if loggedIdentity != (machine.peerID, machine.topology.epoch) {
            loggedIdentity = (machine.peerID, machine.topology.epoch)
            logger[metadataKey: "peer"] = "\(machine.peerID)"
            if machine.topology.epoch > 0 {
                logger[metadataKey: "epoch"] = "\(machine.topology.epoch)"
                logger[metadataKey: "rank"] = "\(machine.rank)"
            }
        }
    }

    private func perform(_ action: Machine.Action, messagesToMasterLater: Bool) {
        switch action {
        case .sendToMaster(let connection, let message):
            send(message.encoded(), on: connection, later: messagesToMasterLater)
        case .sendHandshake(let connection, let message):
            send(message.encoded(), on: connection)
        case .sendToPeer(let connection, let message):
            send(message.encoded(), on: connection)
        case .admit(let connection):
            engine.admit(ConnectionID(rawValue: connection), allowData: true)
        case .trust(let connection):
            gate.trust(ConnectionID(rawValue: connection))
        case .close(let connection):
            engine.close(ConnectionID(rawValue: connection))
            gate.forget(ConnectionID(rawValue: connection))
        case .connectToPeer(let member, let link):
            // An earlier dial of the epoch being formed failed, or the epoch is gone.
            guard machine.formationStatus == .forming || machine.links != nil else { return }
            do {
                let connection = try engine.connect(host: member.address.host, port: member.address.port,
                                                    timeout: configuration.connectTimeout, path: path(for: link))
                apply(machine.dialed(connection.rawValue, to: member, for: link))
            } catch {
                apply(machine.dialFailed(to: member, "\(error)"))
            }
        case .connectToMaster(let timeout):
            do {
                let connection = try engine.connect(host: masterEndpoint.host, port: masterEndpoint.port, timeout: timeout)
                apply(machine.masterDialed(connection.rawValue))
            } catch {
                apply(machine.masterDialFailed("\(error)", now: .now))
            }
        case .membershipPending(let joining, let leaving):
            onMembershipPending(joining, leaving)
        case .log(let level, let message):
            switch level {
            case .info: logger.info("\(message)")
            case .notice: logger.notice("\(message)")
            case .warning: logger.warning("\(message)")
            case .error: logger.error("\(message)")
            }
        }
    }

    /// Shared memory carries the ring lanes only: every mesh link of a member would otherwise map a
    /// segment of its own each epoch (4 MiB, set up and torn down in both processes), and the mesh
    /// carries small messages (recursive doubling, the scans' windows, state requests).
    private func path(for link: LinkKind) -> TransportEngine.DataPath {
        if dataPath == .shm, case .mesh = link { return .tcp }
        return dataPath
    }

    /// Sends a control frame of the current epoch. A send fails on a connection that already failed:
    /// the failure's own event (queued, with its cause) is handled first, and the send's error
    /// counts only if none was.
    private func send(_ payload: [UInt8], on connection: ConnectionNumber, later: Bool = false) {
        let address = FrameAddress(epoch: machine.topology.epoch, opID: 0)
        do {
            if later {
                try engine.sendControlLater(ConnectionID(rawValue: connection), address: address, payload: payload)
            } else {
                try engine.sendControl(ConnectionID(rawValue: connection), address: address, payload: payload)
            }
        } catch {
            drainEvents()
            apply(machine.connectionFailed(connection, error, silent: false, now: .now))
        }
    }

    // MARK: - Requests

    /// Sends `message` to the master. `later`: with the connection's next frame, at
    /// `flushToMaster`, or when a heartbeat is due, in place of one sent this way that has not
    /// left: for `committed`, which nobody waits for and of which the newest says all (writing
    /// each at once cost a wake-up of the master's thread per collective).
    func sendToMaster(_ message: PeerToMaster, later: Bool = false) throws(ChorusError) {
        if let error = masterLossError { throw error }
        apply(machine.send(message), messagesToMasterLater: later)
        if let error = masterLossError { throw error }
    }

    /// Writes the messages sent to the master for later.
    func flushToMaster() { engine.flush(masterConnection) }

    /// Writes them when the master's verdicts are due (`PeerStateMachine.flushesCommitted`).
    func flushToMasterIfDue(opID: UInt64, window: UInt64) {
        if machine.takeCommittedFlush(opID: opID, window: window) { flushToMaster() }
    }

    /// Waits for a topology newer than the current one, then connects its links.
    func awaitTopology(deadline: ContinuousClock.Instant) throws(ChorusError) {
        _ = try waitFor("the master to form a topology", deadline: deadline) { machine.hasNewerTopology ? true : nil }
        let linksDeadline = ContinuousClock.now + configuration.connectTimeout
        apply(machine.adoptOfferedTopology())
        let connected = try wait(until: linksDeadline) { () throws(ChorusError) -> Bool? in
            switch machine.formationStatus {
            case .connected?: return true
            case .failed(let failure)?: throw ChorusError(failure)
            case .forming?, nil:
                if let error = masterLossError { throw error }
                return nil
            }
        }
        if connected == nil {
            apply(machine.formationTimedOut())
            if case .failed(let failure)? = machine.formationStatus { throw ChorusError(failure) }
        }
    }

    /// Dials a mesh link the epoch's pattern left out (answered by the machine's `links` or
    /// `meshDialFailure`).
    func dialMeshLink(to rank: Int) { apply(machine.dialMeshLink(to: rank)) }
    func meshDialFailure(to rank: Int) -> String? { machine.meshDialFailure(to: rank) }

    /// Closes the current links; requests on them finish with `.cancelled`.
    func closeLinks() { apply(machine.closeLinks()) }

    /// An operation aborted: the links go, and the next call needs a topology update.
    func abandonEpoch() { apply(machine.abandonEpoch()) }

    /// Waits for the master to acknowledge our leave, then closes everything.
    func awaitLeave(deadline: ContinuousClock.Instant) throws(ChorusError) {
        _ = try waitFor("the master to acknowledge the leave", deadline: deadline) { machine.leaveAcknowledged ? true : nil }
        apply(machine.finishLeave())
    }
}

extension ChorusError {
    init(_ failure: PeerSession.Machine.Failure) {
        switch failure {
        case .masterUnreachable(let why): self = .masterUnreachable(why)
        case .evicted(let why): self = .evicted(why)
        case .authenticationFailed(let why): self = .authenticationFailed(why)
        case .topologyFailed(let why): self = .topologyFailed(why)
        }
    }
}
