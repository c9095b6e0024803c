/// A peer's side of the control plane as a pure state machine, beside the master's
/// (`MasterStateMachine`): the shell (`PeerSession` in `Chorus`) feeds it the frames and failures
/// of its connections, the API's requests and the time, and carries out the actions it returns.
/// No I/O and no clock: the instants the recovery needs come in with the calls. Unlike the
/// master's, it is neither generic nor a value: the shell asks it several small questions per
/// operation, and a generic value from another module is copied for each unspecialized call and
/// looks its type metadata up at run time (measured: 14 and 48 µs more CPU per 4 KiB all-reduce of
/// 4 peers, in two runs).
///
/// The connections it tells apart:
/// - the master connection (`master`): its handshake when there is a secret, then `register`,
///   topologies, verdicts, plans;
/// - the dial of a master reached again while the first one is lost (`PeerStateMachine+Recovery`);
/// - the links this peer dialed while an epoch forms (`PeerStateMachine+Formation`);
/// - inbound links: hellos, then shared-state requests. The shell authenticates them before their
///   frames come here (`isInbound`).
///
/// Everything the peer sent the master that is not answered yet (`unanswered`) is sent again to a
/// master reached after a loss.
public final class PeerStateMachine {
    public struct Settings: Sendable {
        /// Ring connections this peer dials to its right neighbour (`Configuration.connectionsPerPeer`);
        /// 0: automatic, from `automaticLanes`. The left neighbour's hellos say how many it dials.
        public var lanes: Int
        /// Shared-state requests queued from members before the operation takes them.
        public var maxQueuedPeerMessages: Int
        /// How long a lost master is dialed again before the peer gives up.
        public var recoveryWindow: Duration
        /// Bounds one dial, and the wait for an epoch's links.
        public var connectTimeout: Duration
        public var secret: SharedSecret?
        /// "the master at host:port", for messages.
        public var masterName: String
        /// The peer group this peer registers in.
        public var peerGroup: UInt32

        public init(lanes: Int, maxQueuedPeerMessages: Int, recoveryWindow: Duration, connectTimeout: Duration,
                    secret: SharedSecret?, masterName: String, peerGroup: UInt32 = 0) {
            self.peerGroup = peerGroup
            self.lanes = lanes
            self.maxQueuedPeerMessages = maxQueuedPeerMessages
            self.recoveryWindow = recoveryWindow
            self.connectTimeout = connectTimeout
            self.secret = secret
            self.masterName = masterName
        }
    }

    public enum LogLevel: Hashable, Sendable {
        case info, notice, warning, error
    }

    public enum Action: Hashable, Sendable {
        case sendToMaster(ConnectionNumber, PeerToMaster)
        case sendHandshake(ConnectionNumber, Handshake)
        case sendToPeer(ConnectionNumber, PeerToPeer)
        /// Let data frames through on an inbound link whose hello named this peer.
        case admit(ConnectionNumber)
        /// A link this peer dialed proved the other end holds the secret: its frames count.
        case trust(ConnectionNumber)
        /// Close; requests on it finish at once.
        case close(ConnectionNumber)
        /// Dial `member` for a link of the epoch being formed; answer with `dialed` or `dialFailed`.
        case connectToPeer(Member, LinkKind)
        /// Dial the master's address again; answer with `masterDialed` or `masterDialFailed`.
        case connectToMaster(timeout: Duration)
        case membershipPending(joining: Int, leaving: Int)
        case log(LogLevel, String)
    }

    /// Why the session cannot go on (the shell turns it into the API's error).
    public enum Failure: Error, Hashable, Sendable {
        case masterUnreachable(String)
        /// The master no longer counts this peer (its own word), or a topology left it out.
        case evicted(String)
        case authenticationFailed(String)
        case topologyFailed(String)
    }

    let settings: Settings
    public internal(set) var master: ConnectionNumber
    /// Where this peer listens for its neighbours.
    public let listenAddress: PeerAddress

    public internal(set) var peerID: PeerID = 0
    /// The group this peer registered in (named again when it rejoins a master).
    public internal(set) var group: UInt64 = 0
    public internal(set) var topology = Topology(epoch: 0, members: [])
    public internal(set) var rank = 0
    /// The links of the current epoch (nil for a world of one, before admission, after an abort).
    public internal(set) var links: EpochLinks?
    /// Set when an operation aborted in this epoch: links are gone until the next topology.
    public internal(set) var needsTopologyUpdate = false
    public internal(set) var nextOpID: UInt64 = 1
    /// The revision of the last synchronization of shared state this peer completed.
    public var lastSyncedRevision: UInt64?
    public internal(set) var leaveAcknowledged = false
    /// With automatic lanes (`Settings.lanes` 0): how many to dial to each right neighbour, by id,
    /// chosen from measured links (`Communicator.optimizeTopology()`); a neighbour not named gets one.
    public var automaticLanes: [PeerID: Int] = [:]
    /// The most lanes a link may have (a hello naming more fails the formation).
    public static let maximumLanes = 64

    var verdicts: [UInt64: Outcome] = [:]
    /// The epoch's first aborted operation and the latest that succeeded (see `verdict(for:)`), by
    /// the master's verdict or committed among the members (`committedAmongMembers`).
    var firstAbort: (opID: UInt64, reason: AbortReason)?
    var latestSuccess: UInt64 = 0
    /// The latest operation of the epoch the master has decided (members run at most
    /// `maximumUndecided` operations ahead of it).
    public internal(set) var latestMasterVerdict: UInt64 = 0
    /// The operation at whose start this member last wrote its `committed` to the master
    /// (`takeCommittedFlush`).
    var lastCommittedFlush: UInt64 = 0
    /// The first operation of the epoch the members may commit among themselves (operations begun
    /// before a master was lost are the master's to decide).
    var committableFrom: UInt64 = 1
    /// How far ahead of the master's latest verdict a member of a world of `worldSize` may start
    /// operations: at most half the master's window (`MasterStateMachine.operationWindow`), so it
    /// never takes the member for one that called more collectives than the others, and at most
    /// 2048 / n, so the messages of operations not yet decided stay bounded at the master: a
    /// member sends a `committed` every half window (and a `begin` only for a collective still
    /// moving 100 ms into it). When every member announced every collective, 128 members 32 ahead
    /// overflowed the master engine's event queue (then bounded at 4096). A larger window means
    /// fewer `committed` and fewer rounds of verdicts: `chorus-scale --peers 128,256`, master CPU
    /// per collective at 128 members 1,480 / 1,522 µs with 512 / n, 1,046 / 847 µs with 2048 / n.
    public static func maximumUndecided(worldSize: Int) -> UInt64 {
        UInt64(max(2, min(Int(MasterStateMachine<Int>.operationWindow) / 2, 2048 / max(1, worldSize))))
    }

    /// Whether a member starting operation `opID` writes the `committed` it sent for later now
    /// (members commit among themselves, and the master's verdicts only pace them within `window`,
    /// `maximumUndecided`): once more than half the window is undecided, so the verdicts come
    /// before the bound, and again a quarter window after the last write (`lastFlush`, 0 for none
    /// this epoch) while they have not come. Not at every start until they come: the master's
    /// answer is read during an operation, after the next one has started, so writing at each start
    /// cost every other collective a write to the master ahead of its data and a verdict to read
    /// within it (2 peers, 1 MiB after a 5 ms gap: 357.9 -> 316.6 µs, docs/benchmarks.md).
    public static func flushesCommitted(opID: UInt64, latestMasterVerdict: UInt64, lastFlush: UInt64, window: UInt64) -> Bool {
        opID - min(opID, latestMasterVerdict) > window / 2 && opID - min(opID, lastFlush) > window / 4
    }

    /// `flushesCommitted` for this member's operation `opID` of the current epoch, noting the write
    /// when it is due.
    public func takeCommittedFlush(opID: UInt64, window: UInt64) -> Bool {
        guard Self.flushesCommitted(opID: opID, latestMasterVerdict: latestMasterVerdict, lastFlush: lastCommittedFlush,
                                    window: window) else { return false }
        lastCommittedFlush = opID
        return true
    }

    var syncPlans: [UInt64: SyncPlan] = [:]
    /// Shared-state requests from members, with the operation their frame named.
    var peerMessages: [(connection: ConnectionNumber, opID: UInt64, message: PeerToPeer)] = []
    var offeredTopology: Topology?
    var failedLinks: [ConnectionNumber: any Error & Sendable] = [:]
    /// Inbound links that said hello, until their epoch's ring takes them.
    var hellos: [ConnectionNumber: Hello] = [:]
    /// What this peer sent the master that no verdict, topology or acknowledgement has answered yet.
    public internal(set) var unanswered: [PeerToMaster] = []
    /// With a secret, until the master proved it holds it (nothing else is sent before).
    var masterHandshake: ConnectorHandshake?
    /// The epoch being formed, while it forms.
    var formation: Formation?
    /// Mesh links outside the pattern this peer dialed, until they are ready.
    var onDemandDials: [ConnectionNumber: Dial] = [:]
    /// Why the last on-demand dial to a rank failed.
    var onDemandFailures: [Int: String] = [:]
    /// How forming the current epoch went (nil before the first topology).
    public internal(set) var formationStatus: FormationStatus?
    /// Set while the peer tries to reach a master again.
    var recovery: Recovery?
    var masterFailure: String?
    /// The master's own word: it does not count this peer.
    var evicted = false
    /// The master refused this peer's (missing) authentication, or failed to prove its own.
    var authenticationRefused = false

    /// A machine for a fresh connection to the master.
    public init(master: ConnectionNumber, listen: PeerAddress, settings: Settings) {
        self.master = master
        self.listenAddress = listen
        self.settings = settings
    }

    /// The first actions: the handshake's opening with a secret, otherwise `register`.
    public func start() -> [Action] {
        if let secret = settings.secret {
            let handshake = ConnectorHandshake(secret: secret)
            masterHandshake = handshake
            return [.sendHandshake(master, handshake.opening)]
        }
        return send(.register(listen: listenAddress, peerGroup: settings.peerGroup))
    }

    // MARK: - Questions the shell asks

    /// Why the session is over, if it is.
    public var masterLoss: Failure? {
        guard let masterFailure else { return nil }
        if authenticationRefused { return .authenticationFailed(masterFailure) }
        return evicted ? .evicted(masterFailure) : .masterUnreachable(masterFailure)
    }

    /// The master proved it holds the secret (true at once without one).
    public var masterAuthenticated: Bool { settings.secret == nil || (masterHandshake == nil && masterFailure == nil) }

    /// True for a connection the shell must authenticate before its frames count: neither the master
    /// nor one this peer dialed.
    public func isInbound(_ connection: ConnectionNumber) -> Bool {
        connection != master && connection != recovery?.attempt && formation?.dials[connection] == nil
            && onDemandDials[connection] == nil
    }

    /// A topology newer than the current one has been offered.
    public var hasNewerTopology: Bool { (offeredTopology?.epoch ?? 0) > topology.epoch }

    /// The verdict of `opID`: its own, or the one another verdict of the epoch implies. The master
    /// decides an epoch's operations in order and an abort is also the verdict of every later one,
    /// so a later success means this one succeeded, and an earlier abort is this one's (operations
    /// in flight learn their outcome from the first verdict that settles them).
    public func verdict(for opID: UInt64) -> Outcome? {
        if let own = verdicts[opID] { return own }
        if let broken = firstAbort, broken.opID < opID { return .aborted(broken.reason) }
        return latestSuccess > opID ? .success : nil
    }
    public func syncPlan(for opID: UInt64) -> SyncPlan? { syncPlans[opID] }

    /// True when operation `opID` may be committed among the members: the master connection is up
    /// and the operation began after any loss of it.
    public func mayCommitAmongMembers(_ opID: UInt64) -> Bool {
        recovery == nil && masterFailure == nil && opID >= committableFrom
    }

    /// Every member vouched for `opID` and finished it with the same calls (DESIGN.md, "Success
    /// without the master"): it succeeded, and so did every earlier operation of the epoch.
    public func committedAmongMembers(_ opID: UInt64) {
        latestSuccess = max(latestSuccess, opID)
    }
    public func linkFailure(_ connection: ConnectionNumber) -> (any Error & Sendable)? { failedLinks[connection] }

    // MARK: - Requests from the API

    /// Sends `message` to the master and keeps it until answered (sent again to a master reached
    /// after a loss; while one is sought, only kept).
    public func send(_ message: PeerToMaster) -> [Action] {
        guard masterFailure == nil else { return [] }
        // A later `committed` implies the earlier ones (and the transport replaces them too).
        if case .committed = message { unanswered.removeAll { if case .committed = $0 { true } else { false } } }
        unanswered.append(message)
        return recovery == nil ? [.sendToMaster(master, message)] : []
    }

    /// Hands out the next operation id of this epoch.
    public func takeOperationID() -> UInt64 {
        defer { nextOpID += 1 }
        return nextOpID
    }

    /// The oldest message a member sent for operation `opID` (older operations' are dropped).
    public func takePeerMessage(opID: UInt64) -> (connection: ConnectionNumber, message: PeerToPeer)? {
        peerMessages.removeAll { $0.opID < opID }
        guard let index = peerMessages.firstIndex(where: { $0.opID == opID }) else { return nil }
        let entry = peerMessages.remove(at: index)
        return (entry.connection, entry.message)
    }

    /// Closes the current links; requests on them finish with `.cancelled`.
    public func closeLinks() -> [Action] {
        let dialing = Array(onDemandDials.keys)
        onDemandDials = [:]
        onDemandFailures = [:]
        guard let current = links else { return dialing.map { .close($0) } }
        failedLinks = [:]
        peerMessages = []
        links = nil
        return (current.all + dialing).map { .close($0) }
    }

    /// An operation of this epoch aborted: its links go, and the next call must re-form the ring.
    public func abandonEpoch() -> [Action] {
        needsTopologyUpdate = true
        return closeLinks()
    }

    /// The session ended with the master's acknowledgement of a leave: close everything.
    public func finishLeave() -> [Action] {
        closeLinks() + [.close(master)]
    }

    // MARK: - What the connections carry

    /// A frame on `connection` (the shell authenticated it first if it `isInbound`).
    public func received(frame payload: [UInt8], on connection: ConnectionNumber, epoch: UInt64, opID: UInt64,
                                  now: ContinuousClock.Instant) -> [Action] {
        if connection == master { return receivedFromMaster(payload) }
        if connection == recovery?.attempt { return continueRecovery(payload, now: now) }
        if formation?.dials[connection] != nil { return continueDial(connection, payload) }
        if onDemandDials[connection] != nil { return continueOnDemandDial(connection, payload) }
        switch try? PeerToPeer(decoding: payload) {
        case .hello(let helloEpoch, let from, let to, .mesh)? where to == peerID && helloEpoch == topology.epoch
            && formation == nil && links != nil:
            return adoptMeshHello(connection, from: from)
        case .hello(let helloEpoch, let from, let to, let link)? where to == peerID && helloEpoch >= topology.epoch:
            hellos[connection] = Hello(epoch: helloEpoch, from: from, link: link)
            return [.admit(connection)] + evaluateFormation()
        case let message? where links?.contains(connection) == true && epoch == topology.epoch
            && peerMessages.count < settings.maxQueuedPeerMessages:
            peerMessages.append((connection, opID, message))
            return []
        default:
            return [.close(connection)] // malformed, not for us, or from an epoch that is over
        }
    }

    /// `connection` failed (its other end closed it, it went silent, a send on it failed).
    /// `silent`: the failure is an idle timeout.
    public func connectionFailed(_ connection: ConnectionNumber, _ error: any Error & Sendable, silent: Bool,
                                          now: ContinuousClock.Instant) -> [Action] {
        if connection == master {
            return recovery == nil && masterFailure == nil ? beginRecovery(after: "\(error)", now: now) : [] // an ended session is not resumed
        }
        if connection == recovery?.attempt {
            return recoveryAttemptFailed(silent ? Recovery.silentMaster : "\(error)", now: now)
        }
        if formation?.dials[connection] != nil {
            if formation?.dials[connection]?.failure == nil { formation?.dials[connection]?.failure = "\(error)" }
            return evaluateFormation()
        }
        if onDemandDials[connection] != nil { return onDemandDialLost(connection, error) }
        hellos[connection] = nil
        guard let links, links.contains(connection), failedLinks[connection] == nil else { return [] } // the first cause counts
        failedLinks[connection] = error
        var actions: [Action] = [.log(.notice, "a link of epoch \(topology.epoch) failed: \(error)")]
        // Only silence counts: a link its other end closed (after a failure of its own, say) says
        // that member is alive, and it will be back.
        if recovery != nil, silent, let member = links.member(on: connection, rank: rank, of: topology.members) {
            actions += recoveryNoticed(silent: member)
        }
        return actions
    }

    private func receivedFromMaster(_ payload: [UInt8]) -> [Action] {
        if masterHandshake != nil { return continueMasterHandshake(payload) }
        if Handshake.isHandshake(payload), case .refused(let why)? = try? Handshake(decoding: payload) {
            authenticationRefused = true // a master with a secret refusing a peer without one
            return loseMaster("the master refused this peer: \(why)")
        }
        do {
            return received(try MasterToPeer(decoding: payload))
        } catch {
            return loseMaster("master sent a malformed message: \(error)")
        }
    }

    private func continueMasterHandshake(_ payload: [UInt8]) -> [Action] {
        guard var handshake = masterHandshake else { return [] }
        do {
            switch try handshake.receive(try Handshake(decoding: payload)) {
            case .reply(let proof):
                masterHandshake = handshake
                return [.sendHandshake(master, proof)]
            case .authenticated:
                masterHandshake = nil
                return send(.register(listen: listenAddress, peerGroup: settings.peerGroup))
            }
        } catch let failure as HandshakeFailure {
            authenticationRefused = true
            return [.sendHandshake(master, .refused(failure.reason))] + loseMaster("\(settings.masterName): \(failure.reason)")
        } catch {
            authenticationRefused = true
            return loseMaster("\(settings.masterName) answered the handshake with something else (\(error)); is it a Chorus master with a secret?")
        }
    }

    /// A decoded message on the master connection.
    public func received(_ message: MasterToPeer) -> [Action] {
        forgetAnswered(by: message)
        switch message {
        case .registered(let id, let group):
            peerID = id
            self.group = group
            return [.log(.info, "registered with \(settings.masterName) as peer \(id)")]
        case .topology(let offered):
            offeredTopology = offered
        case .verdict(let epoch, let opID, let outcome) where epoch == topology.epoch:
            verdicts[opID] = outcome
            latestMasterVerdict = max(latestMasterVerdict, opID)
            switch outcome {
            case .success: latestSuccess = max(latestSuccess, opID)
            case .aborted(let reason):
                if firstAbort.map({ opID < $0.opID }) ?? true { firstAbort = (opID, reason) }
                if opID <= latestSuccess {
                    // Never by design: the master aborts only what no member can have committed.
                    return [.log(.error, "the master aborted operation \(opID) of epoch \(topology.epoch), which the members had committed: \(reason)")]
                        + evaluateFormation()
                }
            }
            return evaluateFormation()
        case .verdict:
            break // from an epoch that is over
        case .syncPlan(let epoch, let opID, let plan):
            if epoch == topology.epoch { syncPlans[opID] = plan }
        case .membershipPending(let joining, let leaving):
            return [.membershipPending(joining: Int(joining), leaving: Int(leaving))]
        case .left:
            leaveAcknowledged = true
        case .rejected(let why):
            evicted = true
            return loseMaster("the master removed this peer: \(why)")
        case .resumed:
            break // answers a rejoin, on the connection that becomes the master's
        }
        return []
    }

    /// Drops what `message` answers from `unanswered`: a verdict answers this epoch's messages about
    /// its operation and earlier ones, a topology everything of the epochs before it, `left` all.
    private func forgetAnswered(by message: MasterToPeer) {
        switch message {
        case .verdict(let epoch, let decided, _) where epoch == topology.epoch:
            unanswered.removeAll {
                switch $0 {
                case .begin(_, let op, _), .report(_, let op, _, _), .committed(_, let op, _), .syncState(_, let op, _): op <= decided
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

    /// The session is over: `why` is what the API's error says. An epoch being formed fails with it.
    func loseMaster(_ why: String) -> [Action] {
        guard masterFailure == nil else { return [] }
        masterFailure = why
        var actions: [Action] = [.log(.error, "\(evicted ? "evicted" : "lost the master"): \(why)")]
        if formation != nil, let failure = masterLoss { actions += failFormation(failure) }
        return actions
    }
}

/// A peer's first frame on a new inbound connection.
struct Hello: Hashable, Sendable {
    let epoch: UInt64
    let from: PeerID
    let link: LinkKind
}
