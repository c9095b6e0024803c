import ChorusProtocol
import ChorusTransport
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// One peer's side of the control plane: its master connection, the current topology, the ring
/// links of the current epoch, and the verdicts that arrived. Not thread-safe: `Communicator`
/// serializes every call. Every wait here has a deadline and blocks in the transport (no spinning).
final class PeerSession {
    let engine: TransportEngine
    let configuration: Configuration
    /// The master connection (a new one after the session resumed with a master reached again).
    var master: ConnectionID
    /// Where this peer listens for its neighbours (the address they dial).
    let listenAddress: PeerAddress

    private(set) var peerID: PeerID = 0
    /// The group this peer registered in (named again when it rejoins a master).
    private(set) var group: UInt64 = 0
    private(set) var topology = Topology(epoch: 0, members: [])
    private(set) var rank = 0
    /// The links of the current epoch: `connectionsPerPeer` ring lanes each way and one mesh
    /// connection to every other member (nil for a world of one or before admission).
    private(set) var links: EpochLinks?
    /// Set when a collective aborted in this epoch: links are gone until the next topology.
    var needsTopologyUpdate = false
    private(set) var nextOpID: UInt64 = 1

    // Filled as events arrive.
    private(set) var verdicts: [UInt64: Outcome] = [:]
    private var syncPlans: [UInt64: SyncPlan] = [:]
    /// Shared-state requests from members, with the operation their frame named.
    private var peerMessages: [(connection: ConnectionID, opID: UInt64, message: PeerToPeer)] = []
    private var offeredTopology: Topology?
    private var leaveAcknowledged = false
    private var masterFailure: String?
    /// Set while the peer tries to reach a master again (`MasterRecovery.swift`).
    var recovery: MasterRecovery?
    /// What this peer sent the master that no verdict, topology or acknowledgement has answered yet:
    /// sent again to a master reached after a loss (it may have missed it, or be a new master).
    private(set) var unanswered: [PeerToMaster] = []
    /// The revision of the last synchronization of shared state this peer completed.
    var lastSyncedRevision: UInt64?
    private var hellos: [ConnectionID: Hello] = [:]
    private var failedLinks: [ConnectionID: TransportError] = [:]
    /// Links this peer dialed for the epoch being formed, until the ring is connected.
    private var dials: [ConnectionID: Dial] = [:]
    /// Inbound links authenticate here before their hello counts.
    private var gate: AcceptorGate
    let secret: SharedSecret?
    private let onMembershipPending: (_ joining: Int, _ leaving: Int) -> Void
    let masterEndpoint: (host: String, port: UInt16)
    /// Where data links carry their frames (links to the master carry none).
    let dataPath: TransportEngine.DataPath
    /// The configuration's logger with this process's identity: pid, then peer id, rank and epoch.
    private(set) var logger: Logger

    /// Connects to the master and registers; does not wait for admission.
    init(master endpoint: (host: String, port: UInt16), configuration: Configuration,
         onMembershipPending: @escaping (_ joining: Int, _ leaving: Int) -> Void) throws(ChorusError) {
        try configuration.validate()
        self.configuration = configuration
        self.onMembershipPending = onMembershipPending
        self.masterEndpoint = endpoint
        logger = configuration.logger
        logger[metadataKey: "pid"] = "\(getpid())"
        secret = configuration.sharedSecret
        gate = AcceptorGate(secret: secret, name: "this peer")
        dataPath = try configuration.dataPath()
        do {
            engine = try TransportEngine(settings: configuration.transportSettings)
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
        if let secret {
            do {
                try Self.authenticate(engine: engine, connection: master, secret: secret, to: masterName,
                                      deadline: .now + configuration.handshakeTimeout)
            } catch {
                logger.error("\(error)")
                throw error
            }
        }
        try sendToMaster(.register(listen: listenAddress))
    }

    var masterName: String { "the master at \(masterEndpoint.host):\(masterEndpoint.port)" }

    /// Runs the connecting side of the handshake on a fresh connection to the master (before anything
    /// else is handled on `engine`, so it reads the engine's events directly).
    private static func authenticate(engine: TransportEngine, connection: ConnectionID, secret: SharedSecret, to master: String,
                                     deadline: ContinuousClock.Instant) throws(ChorusError) {
        var handshake = ConnectorHandshake(secret: secret)
        func send(_ message: Handshake) throws(TransportError) {
            try engine.sendControl(connection, address: FrameAddress(epoch: 0, opID: 0), payload: message.encoded())
        }
        do {
            try send(handshake.opening)
        } catch {
            throw .masterUnreachable("\(master): \(error)")
        }
        while ContinuousClock.now < deadline {
            switch engine.nextEvent(timeout: deadline - .now) {
            case .control(let c, _, let payload)? where c == connection:
                do {
                    switch try handshake.receive(try Handshake(decoding: payload)) {
                    case .reply(let proof): try send(proof)
                    case .authenticated: return
                    }
                } catch let failure as HandshakeFailure {
                    try? send(.refused(failure.reason))
                    throw .authenticationFailed("\(master): \(failure.reason)")
                } catch {
                    throw .authenticationFailed("\(master) answered the handshake with something else (\(error)); is it a Chorus master with a secret?")
                }
            case .failed(let c, let error)? where c == connection:
                throw .masterUnreachable("\(master) closed the connection during the handshake: \(error)")
            default:
                continue
            }
        }
        throw .masterUnreachable("\(master) did not answer the handshake in time (paused or overloaded?)")
    }

    // MARK: - Events

    /// Handles every event already queued, without blocking.
    func drainEvents() {
        while let event = engine.nextEvent(timeout: .zero) { handle(event) }
        driveRecovery()
    }

    /// Blocks until one event arrives (or `timeout` passes) and handles it.
    func awaitEvent(timeout: Duration) {
        if let event = engine.nextEvent(timeout: min(timeout, recoveryWake ?? timeout)) { handle(event) }
        driveRecovery()
    }

    /// Waits (blocking, deadline-bound) until `condition` yields a value, handling events meanwhile.
    /// - Throws: `masterUnreachable` if the master connection dies, `timedOut` at the deadline.
    func waitFor<T>(_ what: String, deadline: ContinuousClock.Instant,
                    _ condition: () throws(ChorusError) -> T?) throws(ChorusError) -> T {
        while true {
            if let value = try condition() { return value }
            driveRecovery()
            if let error = masterLossError { throw error }
            let remaining = deadline - .now
            guard remaining > .zero else { throw .timedOut("waiting for \(what)") }
            if let event = engine.nextEvent(timeout: min(remaining, recoveryWake ?? .milliseconds(250))) { handle(event) }
        }
    }

    private func handle(_ event: TransportEvent) {
        switch event {
        case .accepted:
            break // identified by its hello
        case .control(let connection, _, let payload) where connection == master:
            if Handshake.isHandshake(payload), case .refused(let why)? = try? Handshake(decoding: payload) {
                authenticationRefused = true // a master with a secret refusing a peer without one
                loseMaster("the master refused this peer: \(why)")
                return
            }
            do {
                handleMaster(try MasterToPeer(decoding: payload))
            } catch {
                loseMaster("master sent a malformed message: \(error)")
            }
        case .control(let connection, _, let payload) where connection == recovery?.attempt:
            continueRecovery(payload)
        case .control(let connection, _, let payload) where dials[connection] != nil:
            continueDial(connection, payload)
        case .control(let connection, let address, let payload):
            guard gate.admits(connection, payload, engine: engine, logger: logger) else { return }
            switch try? PeerToPeer(decoding: payload) {
            case .hello(let epoch, let from, let to, let link)? where to == peerID && epoch >= topology.epoch:
                engine.admit(connection, allowData: true)
                hellos[connection] = Hello(epoch: epoch, from: from, link: link)
            case let message? where links?.contains(connection) == true && address.epoch == topology.epoch
                && peerMessages.count < configuration.maxQueuedPeerMessages:
                peerMessages.append((connection, address.opID, message))
            default:
                engine.close(connection) // malformed, not for us, or from an epoch that is over
                gate.forget(connection)
            }
        case .failed(let connection, _) where connection == master && recovery != nil:
            break // the connection that failed already
        case .failed(let connection, let error) where connection == master:
            beginRecovery(after: error)
        case .failed(let connection, let error) where connection == recovery?.attempt:
            recoveryAttemptFailed(error.code == .idleTimeout ? MasterRecovery.silentMaster : "\(error)")
        case .failed(let connection, let error) where dials[connection] != nil:
            if dials[connection]?.failure == nil { dials[connection]?.failure = "\(error)" }
        case .failed(let connection, let error):
            hellos[connection] = nil
            gate.forget(connection)
            if let links, links.contains(connection) {
                failedLinks[connection] = error
                logger.notice("a link of epoch \(topology.epoch) failed: \(error)")
                // Only silence counts: a link its other end closed (after a failure of its own, say)
                // says that member is alive, and it will be back.
                if recovery != nil, error.code == .idleTimeout, let member = links.member(on: connection, rank: rank, of: topology.members) {
                    recoveryNoticed(silent: member)
                }
            }
        }
    }

    private func handleMaster(_ message: MasterToPeer) {
        forgetAnswered(by: message)
        switch message {
        case .registered(let id, let group):
            peerID = id
            self.group = group
            logger[metadataKey: "peer"] = "\(id)"
            logger.info("registered with the master at \(masterEndpoint.host):\(masterEndpoint.port) as peer \(id)")
        case .topology(let offered):
            offeredTopology = offered
        case .verdict(let epoch, let opID, let outcome) where epoch == topology.epoch:
            verdicts[opID] = outcome
        case .verdict:
            break // from an epoch that is over
        case .syncPlan(let epoch, let opID, let plan):
            if epoch == topology.epoch { syncPlans[opID] = plan }
        case .membershipPending(let joining, let leaving):
            onMembershipPending(Int(joining), Int(leaving))
        case .left:
            leaveAcknowledged = true
        case .rejected(let why):
            evicted = true // the master's own word
            loseMaster("the master removed this peer: \(why)")
        case .resumed:
            break // answers a rejoin, on the connection that becomes the master's
        }
    }

    /// Drops what `message` answers from `unanswered`: a verdict answers this epoch's messages about
    /// its operation and earlier ones, a topology everything of the epochs before it, `left` all.
    private func forgetAnswered(by message: MasterToPeer) {
        switch message {
        case .verdict(let epoch, let decided, _) where epoch == topology.epoch:
            unanswered.removeAll {
                switch $0 {
                case .begin(_, let op, _), .report(_, let op, _, _), .syncState(_, let op, _): op <= decided
                default: false
                }
            }
        case .topology(let offered) where offered.epoch > topology.epoch:
            unanswered.removeAll()
        case .left:
            unanswered.removeAll()
        case .registered:
            unanswered.removeAll { if case .register = $0 { true } else { false } }
        default:
            break
        }
    }

    func loseMaster(_ why: String) {
        guard masterFailure == nil else { return }
        masterFailure = why
        logger.error("\(evicted ? "evicted" : "lost the master"): \(why)")
    }

    /// True when the master is alive but no longer counts this peer.
    var evicted = false
    /// True when the master refused this peer's (missing) authentication.
    var authenticationRefused = false

    /// The error for a lost master connection.
    var masterLossError: ChorusError? {
        guard let masterFailure else { return nil }
        if authenticationRefused { return .authenticationFailed(masterFailure) }
        return evicted ? .evicted(masterFailure) : .masterUnreachable(masterFailure)
    }

    func sendToMaster(_ message: PeerToMaster) throws(ChorusError) {
        if let error = masterLossError { throw error }
        unanswered.append(message)
        guard recovery == nil else { return } // sent once a master is reached again
        do {
            try engine.sendControl(master, address: FrameAddress(epoch: topology.epoch, opID: 0), payload: message.encoded())
        } catch {
            drainEvents() // the connection's failure event starts the recovery, which sends it again
            if recovery == nil, masterLossError == nil { beginRecovery(after: error) }
            if let error = masterLossError { throw error }
        }
    }

    // MARK: - Topology

    /// Waits for a topology newer than the current one, then connects its ring.
    func awaitTopology(deadline: ContinuousClock.Instant) throws(ChorusError) {
        let current = topology.epoch
        let next = try waitFor("the master to form a topology", deadline: deadline) { () throws(ChorusError) -> Topology? in
            guard let offered = offeredTopology, offered.epoch > current else { return nil }
            return offered
        }
        try adopt(next)
    }

    private func adopt(_ next: Topology) throws(ChorusError) {
        closeLinks()
        topology = next
        verdicts = [:]
        syncPlans = [:]
        peerMessages = []
        nextOpID = 1
        guard let index = next.members.firstIndex(where: { $0.id == peerID }) else {
            throw .evicted("epoch \(next.epoch) does not include peer \(peerID)")
        }
        rank = index
        logger[metadataKey: "epoch"] = "\(next.epoch)"
        logger[metadataKey: "rank"] = "\(index)"
        logger.info("epoch \(next.epoch): rank \(index) of \(next.members.count)")
        needsTopologyUpdate = true // until the ring is connected
        for (connection, hello) in hellos where hello.epoch < next.epoch {
            engine.close(connection)
            gate.forget(connection)
            hellos[connection] = nil
        }
        let n = next.members.count
        guard n > 1 else {
            needsTopologyUpdate = false
            return
        }
        let right = next.members[(index + 1) % n], left = next.members[(index + n - 1) % n]
        let lanes = configuration.connectionsPerPeer
        let deadline = ContinuousClock.now + configuration.connectTimeout
        // Dial: the ring lanes to the right neighbour, and the mesh to every member after this one.
        var dialed: [ConnectionID] = []
        func dial(_ member: Member, _ link: LinkKind) throws(ChorusError) -> ConnectionID {
            do {
                let connection = try engine.connect(host: member.address.host, port: member.address.port,
                                                    timeout: configuration.connectTimeout, path: dataPath)
                dialed.append(connection)
                let hello = PeerToPeer.hello(epoch: next.epoch, from: peerID, to: member.id, link: link)
                // With a secret the hello follows the handshake (continueDial); without one it goes now.
                let dial = Dial(member: member, hello: hello, handshake: secret.map(ConnectorHandshake.init))
                let first = dial.handshake?.opening.encoded() ?? hello.encoded()
                dials[connection] = dial
                try engine.sendControl(connection, address: FrameAddress(epoch: next.epoch, opID: 0), payload: first)
                return connection
            } catch {
                reportUnreachable(member.id, "\(error)")
                throw .topologyFailed("cannot reach peer \(member.id) at \(member.address): \(error)")
            }
        }
        defer { dials = [:] }
        var rightLanes: [ConnectionID] = [], mesh: [Int: ConnectionID] = [:]
        do {
            for lane in 0 ..< lanes { rightLanes.append(try dial(right, .ring(lane: UInt16(lane), lanes: UInt16(lanes)))) }
            for j in index + 1 ..< n { mesh[j] = try dial(next.members[j], .mesh) }
        } catch {
            dialed.forEach { engine.close($0); gate.forget($0) }
            throw error
        }
        // Accept: the left neighbour's lanes, and the mesh from every member before this one.
        let earlier = Dictionary(uniqueKeysWithValues: next.members[..<index].enumerated().map { ($0.element.id, $0.offset) })
        let inbound: (left: [ConnectionID], mesh: [Int: ConnectionID])
        var missing: PeerID? // the first member whose links have not arrived
        do {
            inbound = try waitFor("the neighbours of epoch \(next.epoch) to connect", deadline: deadline) {
                () throws(ChorusError) -> (left: [ConnectionID], mesh: [Int: ConnectionID])? in
                try checkDials()
                let current = hellos.filter { $0.value.epoch == next.epoch }
                var leftLanes: [(Int, ConnectionID)] = [], meshIn: [Int: ConnectionID] = [:]
                for (connection, hello) in current {
                    switch hello.link {
                    case .ring(let lane, let theirLanes) where hello.from == left.id:
                        guard Int(theirLanes) == lanes else {
                            throw .topologyFailed("left neighbour \(left.id) uses \(theirLanes) connections, this peer \(lanes)")
                        }
                        leftLanes.append((Int(lane), connection))
                    case .mesh:
                        if let rank = earlier[hello.from] { meshIn[rank] = connection }
                    default:
                        break
                    }
                }
                let ownHellosSent = dials.values.allSatisfy { $0.handshake == nil || $0.authenticated }
                missing = leftLanes.count < lanes ? left.id : earlier.first { meshIn[$0.value] == nil }?.key
                guard leftLanes.count == lanes, meshIn.count == index, ownHellosSent else {
                    // A member lost while the ring forms never dials: the master's abort says so at once.
                    // (A ring that did connect is kept; the abort then surfaces on the next collective.)
                    if case .aborted(let reason)? = verdicts[1] { throw .topologyFailed("\(reason) while the ring formed") }
                    return nil
                }
                return (leftLanes.sorted { $0.0 < $1.0 }.map(\.1), meshIn)
            }
        } catch {
            dialed.forEach { engine.close($0); gate.forget($0) }
            if case .timedOut(let what) = error {
                if let missing { reportUnreachable(missing, "its links did not arrive within \(configuration.connectTimeout)") }
                throw .topologyFailed("timed out \(what)")
            }
            throw error
        }
        (inbound.left + Array(inbound.mesh.values)).forEach { hellos[$0] = nil }
        links = EpochLinks(left: inbound.left, right: rightLanes, mesh: mesh.merging(inbound.mesh) { a, _ in a })
        needsTopologyUpdate = false
    }

    /// Answers the handshake on a link this peer dialed, then sends its hello; any other frame before
    /// the ring is connected fails the dial.
    private func continueDial(_ connection: ConnectionID, _ payload: [UInt8]) {
        guard var dial = dials[connection], dial.failure == nil else { return }
        guard var handshake = dial.handshake, !dial.authenticated else {
            dials[connection]?.failure = "it sent a frame before the ring was connected"
            engine.close(connection)
            return
        }
        do {
            switch try handshake.receive(try Handshake(decoding: payload)) {
            case .reply(let proof): // the hello goes right behind the proof
                let address = FrameAddress(epoch: topology.epoch, opID: 0)
                try engine.sendControl(connection, address: address, payload: proof.encoded())
                try engine.sendControl(connection, address: address, payload: dial.hello.encoded())
            case .authenticated:
                dial.authenticated = true
                gate.trust(connection)
            }
            dial.handshake = handshake
            dials[connection] = dial
        } catch let failure as HandshakeFailure {
            try? engine.sendControl(connection, address: FrameAddress(epoch: topology.epoch, opID: 0),
                                    payload: Handshake.refused(failure.reason).encoded())
            dials[connection]?.failure = failure.description
            dials[connection]?.refusedAuthentication = true
            engine.close(connection)
        } catch {
            dials[connection]?.failure = "\(error)"
            engine.close(connection)
        }
    }

    /// Throws for the first link this peer dialed that failed (refused, closed, not authenticated).
    private func checkDials() throws(ChorusError) {
        guard let (_, dial) = dials.first(where: { $0.value.failure != nil }) else { return }
        let what = "peer \(dial.member.id) at \(dial.member.address): \(dial.failure!)"
        if dial.refusedAuthentication { throw .authenticationFailed(what) }
        reportUnreachable(dial.member.id, dial.failure!)
        throw .topologyFailed("the link to \(what)")
    }

    /// Tells the master this peer could not connect to `member` while the epoch formed (best effort:
    /// a lost master surfaces on its own).
    private func reportUnreachable(_ member: PeerID, _ detail: String) {
        try? sendToMaster(.unreachable(epoch: topology.epoch, peer: member, detail: detail))
    }

    /// Closes the current ring links; requests on them finish with `.cancelled`.
    func closeLinks() {
        guard let current = links else { return }
        for connection in current.all {
            engine.close(connection)
            gate.forget(connection)
        }
        failedLinks = [:]
        peerMessages = []
        links = nil
    }

    /// Waits for the master to acknowledge our leave.
    func awaitLeave(deadline: ContinuousClock.Instant) throws(ChorusError) {
        _ = try waitFor("the master to acknowledge the leave", deadline: deadline) { leaveAcknowledged ? true : nil }
        closeLinks()
        engine.close(master)
    }

    // MARK: - Operations

    /// Hands out the next operation id of this epoch.
    func takeOperationID() -> UInt64 {
        defer { nextOpID += 1 }
        return nextOpID
    }

    /// The verdict for `opID` if it has arrived.
    func verdict(for opID: UInt64) -> Outcome? { verdicts[opID] }

    /// The shared-state transfer plan for `opID` if it has arrived.
    func syncPlan(for opID: UInt64) -> SyncPlan? { syncPlans[opID] }

    /// The oldest message a member sent for operation `opID` (older operations' are dropped).
    func takePeerMessage(opID: UInt64) -> (connection: ConnectionID, message: PeerToPeer)? {
        peerMessages.removeAll { $0.opID < opID }
        guard let index = peerMessages.firstIndex(where: { $0.opID == opID }) else { return nil }
        let entry = peerMessages.remove(at: index)
        return (entry.connection, entry.message)
    }

    /// The failure of a current link, if it failed.
    func linkFailure(_ connection: ConnectionID) -> TransportError? { failedLinks[connection] }
}

/// The connections of one epoch. Ring algorithms use the lanes (frame `tag` travels on lane
/// `tag % lanes`, so consecutive segments stripe over parallel streams while each lane keeps its
/// order); other algorithms use the mesh, one connection per pair of members, both ways.
struct EpochLinks {
    let left: [ConnectionID]
    let right: [ConnectionID]
    /// By rank.
    let mesh: [Int: ConnectionID]

    var all: [ConnectionID] { left + right + Array(mesh.values) }
    func contains(_ connection: ConnectionID) -> Bool { all.contains(connection) }

    /// The member at the other end of `connection`, for a member at `rank` of `members`.
    func member(on connection: ConnectionID, rank: Int, of members: [Member]) -> PeerID? {
        let n = members.count
        if left.contains(connection) { return members[(rank + n - 1) % n].id }
        if right.contains(connection) { return members[(rank + 1) % n].id }
        return mesh.first { $0.value == connection }.map { members[$0.key].id }
    }
}

/// A link this peer dialed while its epoch forms.
struct Dial {
    let member: Member
    let hello: PeerToPeer
    /// Nil without a secret (the hello went at once).
    var handshake: ConnectorHandshake?
    /// The acceptor proved it holds the secret (with a secret: until then nothing else counts).
    var authenticated = false
    /// Why the link failed before the ring was connected.
    var failure: String?
    var refusedAuthentication = false
}

/// A peer's first frame on a new inbound connection.
struct Hello {
    let epoch: UInt64
    let from: PeerID
    let link: LinkKind
}
