/// The master's membership and verdict logic as a pure state machine (the shape of SWIM's
/// `SWIMInstance`): the shell feeds it connection events and decoded messages and carries out the
/// actions it returns. No I/O, no clocks; liveness comes in as `connectionClosed` from the transport,
/// whose heartbeats and idle timeouts turn a hung peer into a closed connection.
///
/// Terms:
/// - pending peer: registered, waiting for admission at the next safe point;
/// - member: in the current epoch's ring; its index in `ring` is its rank;
/// - safe point: every member has asked for a topology update (or to leave), so the master may
///   admit pending peers (unless a member asked to re-form without admitting), drop leavers, and
///   start a new epoch;
/// - verdict: the one outcome of operation `opID` in an epoch. Success needs a success report from
///   every member with identical descriptors; the first failure report aborts it.
/// - success without the master: members that all finished an operation's data commit it among
///   themselves, each having vouched on its master connection that it never reports a failure for it
///   (DESIGN.md). So the master aborts only what no member can have committed:
///   - at a failure report, a member at the safe point or leaving that has not reported the
///     operation, or calls that differ: that member never vouches for it;
///   - when a member that reported success says it has waited past its deadline (`timedOut` after
///     its success report), the members that have not reported are fenced (`fence`), and an answer
///     that one of them never vouched aborts the operation;
///   - a lost member does not abort anything by itself: it may have vouched and others may have
///     committed. The operation is decided by the survivors' reports (success when every one of them
///     succeeded), which come once their links to it fail.
/// - a pair: an epoch formed with two members, which commit in one hop (each sends its token ahead
///   of its data and commits once it holds both contributions, without the other's vouch). So one
///   may commit while the other's data phase fails (a link that failed one way), and a member's
///   failure decides nothing by itself:
///   - it is held, and the other member is fenced (unless it reported already: then the operation
///     aborts, since a member that reported without committing never commits);
///   - the operation aborts once no member can commit it: each reported it without committing,
///     had its failure held, answered a fence that it never vouched, or was lost;
///   - the other member's `committed` decides a success, and the member whose failure was held is
///     evicted (it cannot return the result); a member whose first report of an operation already
///     decided a success is a failure is evicted the same way.
/// - arrival: the first message of a member for the undecided operation (`begin`, sent before its
///   data moves; `report`; or `syncState`) with what it was called with. Two arrivals that differ
///   abort the operation at once (`argumentMismatch` naming the field, the values and the ranks), so
///   members that called different collectives never wait for each other's data.
///   A member that asks for the safe point while others have arrived at the undecided operation
///   (or that others reach while it waits there) aborts that operation with
///   `topologyUpdateRequested`: it will not call it, so they must not wait for it.
///   After an abort the epoch is broken: every later operation in it aborts with the same reason,
///   until the members re-form the ring with an update.
/// - operations in flight: a member may send messages about operations after the undecided one
///   (it moves their data while their verdicts are pending), up to `operationWindow` ahead. They wait
///   here, unread, and are taken in arrival order once the operations before theirs are decided, so
///   verdicts are given in operation order: a success means every earlier operation of the epoch
///   succeeded, and an abort is also the verdict of every later one.
/// - synchronization: an operation whose members first send their shared-state digests; once all
///   have, the master elects (`StateElection`) and either decides success at once (nobody outdated)
///   or sends the plan. From then on a lost member does not abort it (receivers replace a lost
///   source); the epoch is still broken for the operations after it.
/// - partition: members that reach the master but not each other. A link failure naming both ends
///   (in a report, or `unreachable` while the ring forms) counts once per epoch for that pair; a
///   pair that failed in `partitionStrikes` epochs in a row, with no success in between, is a
///   partition. At the next safe point the master evicts the member named in the most such pairs
///   (ties: the highest peer id, the latest to join), telling it which pair could not connect, so
///   the others re-form without it instead of failing forever.
/// - rejoin: a peer whose master connection failed connects again and asks to resume its session.
///   A master that still counts it (in the same group) moves it to the new connection, resending a
///   verdict or topology it missed. A master that has formed no group of its own *adopts* the group:
///   it gathers the returning members' reports (the newest epoch any of them reports is the group's,
///   its members in its ring order) until every member of that epoch has returned, or a majority has
///   and the rest were reported silent in that epoch, or the shell ends the adoption at its window;
///   then it takes the epoch, the last verdict any member received and the newest synchronized
///   revision, and members that did not return are lost. While adopting it gives peer ids of a new
///   generation (the old master's ids may still be out there). Everyone else is refused. A new
///   master can hold its first admission (`holdingFirstAdmission`) so that a newcomer does not form
///   a group just before a returning one arrives.
public struct MasterStateMachine<Connection: Hashable & Sendable>: Sendable {
    public enum Action: Hashable, Sendable {
        case send(Connection, MasterToPeer)
        /// Fence the member on the connection for operation `opID` of `epoch` (the transport's
        /// operation fence); its answer comes back as `fenceAnswered`.
        case fence(Connection, epoch: UInt64, opID: UInt64)
        /// Close after sending anything queued before this action.
        case close(Connection)
    }

    private enum Role: Hashable, Sendable {
        case pending
        case member
        case leaving
    }

    private struct Peer: Sendable {
        var id: PeerID
        var connection: Connection
        let address: PeerAddress
        var role: Role
        var requestedMinimum: UInt32? // set while the member waits at the safe point
        var admitting = true // what it asked for there: false keeps waiting peers waiting
        var proposedOrder: [PeerID] = [] // the ring order it proposed there (empty: none)
        var reportedThrough: UInt64 = 0 // the latest operation of the epoch it reported (held reports count)
    }

    private struct Report: Sendable {
        let descriptor: OperationDescriptor
        let outcome: Outcome
    }

    private var peers: [Connection: Peer] = [:]
    private var nextPeerID: PeerID = 1
    public private(set) var epoch: UInt64 = 0
    /// Members in ring order.
    private var ring: [Connection] = [] {
        didSet { rankOf = Dictionary(uniqueKeysWithValues: ring.enumerated().map { ($0.element, $0.offset) }) }
    }
    /// Each member's position in `ring`: looked up on every message, where a search of the ring
    /// cost O(n) (rebuilt only when the ring changes).
    private var rankOf: [Connection: Int] = [:]
    private var lastDecidedOp: UInt64 = 0
    /// The verdict of `lastDecidedOp` (resent to a member that rejoins without it).
    private var lastOutcome: Outcome = .success
    private var reports: [Connection: Report] = [:]
    /// Messages about operations after the undecided one (see "operations in flight"), by operation:
    /// at most one `begin`, one `report` and one `syncState` per member and operation.
    private var early: [UInt64: [(connection: Connection, message: PeerToMaster)]] = [:]
    /// The verdicts of the last `operationWindow` operations of the epoch, for a member that rejoins
    /// having missed several.
    private var recentOutcomes: [UInt64: Outcome] = [:]
    /// What each member called the undecided operation with (see "arrival").
    private var arrivals: [Connection: OperationDescriptor] = [:]
    /// Members fenced for the undecided operation whose answers have not come, and the reason it
    /// aborts with when one of them never vouched (see "success without the master").
    private var fenced: Set<Connection> = []
    private var fenceReason: AbortReason?
    /// The epoch was formed with two members, who commit in one hop (see "a pair").
    private var pairEpoch = false
    /// A pair member's failure of the undecided operation, held while the other may have committed
    /// it (see "a pair").
    private var pairFailure: (connection: Connection, reason: AbortReason)?
    /// Pair members that answered a fence for the undecided operation: they never vouched for it.
    private var neverVouched: Set<Connection> = []
    /// The first member lost in this epoch: the root cause an abort after it names.
    private var lostInEpoch: PeerID?
    /// A member asked for a topology update in this epoch (it waits at the safe point, or did).
    private var safePointRequested = false
    private let naming: DescriptorNaming
    /// The group's identity (see `MasterToPeer.registered`): drawn by the shell, or taken from the
    /// members of a group this master adopts.
    public private(set) var group: UInt64
    private var brokenReason: AbortReason?
    /// Digests of the synchronization that is electing (operation `lastDecidedOp + 1`).
    private var syncDigests: [Connection: StateDigest] = [:]
    /// The synchronization whose plan went out (resent to a member that asks again).
    private var syncInTransfer: (opID: UInt64, plan: SyncPlan)?
    /// The group being re-adopted, while its members return (see "rejoin").
    private var adoption: Adoption?

    private struct Adoption: Sendable {
        /// The newest topology a returning member reported.
        var topology: Topology
        var returned: [Connection: Rejoin] = [:]
        /// Members that returning members of an epoch found silent on their links (stopped, dead).
        var silent: Set<SilentMember> = []

        struct SilentMember: Hashable, Sendable {
            let epoch: UInt64
            let peer: PeerID
        }

        /// A member has returned (waiting peers alone do not know the group), and every member of
        /// the epoch has returned; or a majority of them has and the others were found silent by
        /// members of that epoch. (A majority, because a peer that was dropped before the master
        /// died finds everyone silent: alone, it must not stand for its old epoch.)
        var isComplete: Bool {
            let back = Set(returned.values.map(\.peer))
            let members = topology.members.map(\.id)
            let returning = members.filter { back.contains($0) }.count
            guard topology.epoch > 0, returning < members.count else { return topology.epoch > 0 }
            return returning > members.count / 2
                && members.allSatisfy { back.contains($0) || silent.contains(SilentMember(epoch: topology.epoch, peer: $0)) }
        }
    }
    /// The revision of the last successful synchronization (kept across epochs).
    public private(set) var lastSyncedRevision: UInt64?
    /// Pairs of members whose link failed, with in how many epochs in a row (cleared by a success).
    private var linkStrikes: [LinkPair: Int] = [:]
    private var struckThisEpoch: Set<LinkPair> = []
    /// Epochs in a row a pair's link must fail before the pair counts as a partition: one failure
    /// may be the effect of a crash the master is about to see; the same pair failing again in the
    /// re-formed ring is not.
    public static var partitionStrikes: Int { 2 }
    /// How far ahead of the undecided operation a member's messages may be (its operations in
    /// flight); a message further ahead is a mismatch (the members called different numbers of
    /// collectives), and the bound keeps what the master holds for early messages small.
    public static var operationWindow: UInt64 { 64 }

    private struct LinkPair: Hashable, Sendable, Comparable {
        let low: PeerID, high: PeerID
        init(_ a: PeerID, _ b: PeerID) { (low, high) = a < b ? (a, b) : (b, a) }
        func contains(_ id: PeerID) -> Bool { low == id || high == id }
        static func < (a: LinkPair, b: LinkPair) -> Bool { (a.low, a.high) < (b.low, b.high) }
    }

    /// - Parameter naming: how to name a descriptor's fields in a mismatch's message (the public
    ///   layer knows the collectives, data types and operators; the default prints numbers).
    ///   - group: this master's group identity if it forms a group of its own (a random number).
    ///   - holdingFirstAdmission: a new master admits nobody until the shell calls
    ///     `endFirstAdmissionHold()` (or a group returns to it): members of a group that lost its
    ///     master may be about to return, and a newcomer admitted alone first would make this master
    ///     refuse them.
    public init(naming: @escaping DescriptorNaming = OperationDescriptor.numericFields, group: UInt64,
                holdingFirstAdmission: Bool = false) {
        self.naming = naming
        self.group = group
        self.holdingFirstAdmission = holdingFirstAdmission
    }

    private var holdingFirstAdmission: Bool

    /// Ends the hold on the first admission (see `init`).
    public mutating func endFirstAdmissionHold() -> [Action] {
        guard holdingFirstAdmission else { return [] }
        holdingFirstAdmission = false
        return formTopologyIfReady()
    }

    /// Peers waiting for admission.
    public var pendingCount: Int { peers.values.reduce(0) { $0 + ($1.role == .pending ? 1 : 0) } } // no array per call: the master asks per event
    /// Members of the current epoch.
    public var worldSize: Int { ring.count }
    /// Everyone with a live registration.
    public var registeredCount: Int { peers.count }
    /// True while a group is being re-adopted: the shell ends it with `endAdoption()` at its window.
    public var isAdopting: Bool { adoption != nil }
    /// True once the connection has registered or rejoined (the shell then admits it in the engine).
    public func knows(_ connection: Connection) -> Bool { peers[connection] != nil || adoption?.returned[connection] != nil }
    /// Members a safe point waits for: once the epoch is broken (an operation aborted or a member was
    /// lost) or a member waits there (to admit joiners, to leave), the members that have not reached
    /// it. Empty while the epoch is whole and nobody waits there.
    public var membersHoldingUpTheSafePoint: [Connection] {
        let away = ring.filter { peers[$0]?.requestedMinimum == nil }
        return brokenReason != nil || lostInEpoch != nil || away.count < ring.count ? away : []
    }
    /// The peer registered on `connection`, if any.
    public func peerID(of connection: Connection) -> PeerID? { peers[connection]?.id }
    /// The address a registered peer listens on.
    public func address(of connection: Connection) -> PeerAddress? { peers[connection]?.address }

    // MARK: - Events

    public mutating func received(_ message: PeerToMaster, from connection: Connection) -> [Action] {
        if case .register(let address, _) = message { return register(connection, address: address) }
        if case .rejoin(let rejoin) = message, peers[connection] == nil, adoption?.returned[connection] == nil {
            return self.rejoin(connection, rejoin)
        }
        if adoption?.returned[connection] != nil {
            // Before `resumed` a returning member sends only which members' links went silent.
            guard case .unreachable(let silentEpoch, let silent, _) = message else { return [] }
            adoption!.silent.insert(Adoption.SilentMember(epoch: silentEpoch, peer: silent))
            return adoption!.isComplete ? endAdoption() : []
        }
        guard let peer = peers[connection] else {
            return [.send(connection, .rejected("register before anything else")), .close(connection)]
        }
        switch message {
        case .register, .rejoin:
            return [.send(connection, .rejected("already registered as peer \(peer.id)")), .close(connection)]
        case .updateTopology(let requestEpoch, let minimum, let admitting, let ringOrder):
            // Pending peers wait for admission anyway; a request from an older epoch was answered by
            // the topology on its way (a member that rejoined sends it again).
            guard peer.role == .member, requestEpoch == epoch else { return [] }
            peers[connection]?.requestedMinimum = minimum
            peers[connection]?.admitting = admitting
            peers[connection]?.proposedOrder = ringOrder
            safePointRequested = true
            // Members that already began the undecided operation would wait for this one forever
            // (unless this member did it too: it may have committed it with the others).
            var actions: [Action] = []
            if brokenReason == nil, syncInTransfer == nil, !arrivals.isEmpty, peer.reportedThrough <= lastDecidedOp {
                actions += abort(opID: lastDecidedOp + 1, .topologyUpdateRequested(peer.id))
            }
            return actions + formTopologyIfReady()
        case .leave:
            if peer.role == .pending {
                peers[connection] = nil
                return [.send(connection, .left)] + pendingChanged()
            }
            peers[connection]?.role = .leaving
            peers[connection]?.requestedMinimum = 0
            safePointRequested = true
            // The leaver takes part in no further operation: abort the next one (members that check
            // `membershipPending` first call updateTopology instead and never see it), or, when it
            // reported that one already, the first after it (`safePointConflict`).
            var actions: [Action] = []
            if brokenReason == nil, peer.reportedThrough <= lastDecidedOp { actions += abort(opID: lastDecidedOp + 1, .peerLeft(peer.id)) }
            return actions + pendingChanged() + formTopologyIfReady()
        case .begin(let beginEpoch, let opID, let descriptor):
            if holdEarly(message, epoch: beginEpoch, opID: opID, from: connection) { return [] }
            return begin(from: connection, epoch: beginEpoch, opID: opID, descriptor)
        case .report(let reportEpoch, let opID, let descriptor, let outcome):
            if let forgery = Self.forgery(in: outcome, from: peer.id) {
                // It reported a failure, so it vouched for nothing: the operation aborts at once
                // (in a pair the other may have committed it: its loss leaves that to the survivor).
                let whole = brokenReason == nil && reportEpoch == epoch && syncInTransfer == nil && !pairEpoch
                if whole { brokenReason = .peerLost(peer.id) }
                let actions: [Action] = [.send(connection, .rejected(forgery)), .close(connection)] + connectionClosed(connection)
                return actions + (whole ? decide(opID: lastDecidedOp + 1, .aborted(.peerLost(peer.id))) : [])
            }
            if case .aborted(let reason) = outcome, pairEpoch, reportEpoch == epoch, peer.reportedThrough < opID,
               decidedSuccess(opID) {
                return evict(connection, failed: opID, reason)
            }
            if reportEpoch == epoch { peers[connection]?.reportedThrough = max(peer.reportedThrough, opID) }
            if holdEarly(message, epoch: reportEpoch, opID: opID, from: connection) { return [] }
            return report(from: connection, epoch: reportEpoch, opID: opID,
                          Report(descriptor: descriptor, outcome: outcome))
        case .committed(let commitEpoch, let opID, _):
            if commitEpoch == epoch { peers[connection]?.reportedThrough = max(peer.reportedThrough, opID) }
            return committed(from: connection, epoch: commitEpoch, opID: opID)
        case .syncState(let reportEpoch, let opID, let digest):
            if holdEarly(message, epoch: reportEpoch, opID: opID, from: connection) { return [] }
            return syncState(from: connection, epoch: reportEpoch, opID: opID, digest)
        case .unreachable(let reportEpoch, let other, let detail):
            guard peer.role == .member, reportEpoch == epoch else { return [] } // a formation that is over
            let reason = AbortReason.linkFailed(reporter: peer.id, peer: other, detail: detail)
            recordLinkFailure(reason)
            // Members may have committed the undecided operation before the link went silent (one
            // recovering from a lost master says so before it sends its reports again): the
            // members that have not reported it are fenced first.
            return brokenReason == nil ? fenceUnreported(opID: lastDecidedOp + 1, reason: reason) : []
        }
    }

    /// Why a member's report claims what only another member or the master may say, or nil when it
    /// does not. A member reports only its own failures (a link, a timeout, a transfer, a frame it
    /// did not expect); peers lost or leaving, safe points and state elections are the master's to
    /// decide. Such a sender is cut off, as for a malformed message.
    static func forgery(in outcome: Outcome, from sender: PeerID) -> String? {
        guard case .aborted(let reason) = outcome else { return nil }
        let reporter: PeerID
        switch reason {
        case .linkFailed(let id, _, _), .timedOut(let id, _), .stateTransferFailed(let id, _): reporter = id
        case .argumentMismatch: return nil
        case .peerLost, .peerLeft, .topologyUpdateRequested, .staleEpoch, .stateMismatch, .stateSenderOutdated:
            return "peer \(sender) reported \"\(reason)\", which only the master decides"
        }
        guard reporter == sender else { return "peer \(sender) sent a report in the name of peer \(reporter)" }
        return nil
    }

    /// A message that could not be decoded: the sender is cut off, as if it had crashed.
    public mutating func receivedMalformed(from connection: Connection, reason: String) -> [Action] {
        [.send(connection, .rejected(reason)), .close(connection)] + connectionClosed(connection)
    }

    /// The connection closed, failed, or went silent past the idle timeout.
    public mutating func connectionClosed(_ connection: Connection) -> [Action] {
        if adoption?.returned.removeValue(forKey: connection) != nil { return [] }
        guard let peer = peers.removeValue(forKey: connection) else { return [] }
        if peer.role == .pending { return pendingChanged() }
        ring.removeAll { $0 == connection }
        reports[connection] = nil
        arrivals[connection] = nil
        fenced.remove(connection)
        neverVouched.remove(connection)
        if pairFailure?.connection == connection { pairFailure = nil } // lost: the survivor decides
        let opBefore = lastDecidedOp
        for opID in early.keys { early[opID]?.removeAll { $0.connection == connection } }
        var actions: [Action] = []
        if let transfer = syncInTransfer {
            // The transfer goes on without it; the operations after it abort.
            if brokenReason == nil { brokenReason = .peerLost(peer.id) }
            actions += decideIfAllReported(opID: transfer.opID)
        } else if brokenReason == nil, !syncDigests.isEmpty {
            // An election waits for every digest: it cannot be committed without the master.
            brokenReason = .peerLost(peer.id)
            actions += decide(opID: lastDecidedOp + 1, .aborted(.peerLost(peer.id)))
        } else if brokenReason == nil {
            // It may have vouched, and the others committed: the survivors' reports decide (see
            // "success without the master"); their links to it fail, so they report soon.
            if lostInEpoch == nil { lostInEpoch = peer.id }
            actions += decideIfAllReported(opID: lastDecidedOp + 1)
            if lastDecidedOp == opBefore, pairEpoch, pairFailure != nil || !neverVouched.isEmpty, noMemberCanCommit() {
                // The pair's survivor failed it, or never vouched: nobody left can have committed it.
                actions += abort(opID: opBefore + 1, .peerLost(peer.id))
            }
            // A survivor that never vouched for it (its engine answers the fence at once, or at its
            // I/O thread's tick) makes the abort safe: so a loss still ends the operation promptly.
            if lastDecidedOp == opBefore { actions += fenceUnreported(opID: opBefore + 1, reason: .peerLost(peer.id)) }
        }
        return actions + formTopologyIfReady()
    }

    // MARK: - Registration and topology

    private mutating func register(_ connection: Connection, address: PeerAddress) -> [Action] {
        if let existing = peers[connection] {
            return [.send(connection, .rejected("already registered as peer \(existing.id)")), .close(connection)]
        }
        let id = nextPeerID
        nextPeerID += 1
        peers[connection] = Peer(id: id, connection: connection, address: address, role: .pending)
        return [.send(connection, .registered(id, group: group))] + pendingChanged() + formTopologyIfReady()
    }

    private func pendingChanged() -> [Action] {
        let leaving = UInt32(peers.values.filter { $0.role == .leaving }.count)
        let message = MasterToPeer.membershipPending(joining: UInt32(pendingCount), leaving: leaving)
        return ring.map { .send($0, message) }
    }

    /// Counts a failed link between two current members (once per epoch per pair).
    private mutating func recordLinkFailure(_ reason: AbortReason) {
        guard case .linkFailed(let reporter, let other?, _) = reason, reporter != other else { return }
        let members = Set(ring.compactMap { peers[$0]?.id })
        guard members.contains(reporter), members.contains(other) else { return }
        let pair = LinkPair(reporter, other)
        if struckThisEpoch.insert(pair).inserted { linkStrikes[pair, default: 0] += 1 }
    }

    /// At a safe point, evicts members until no partitioned pair is left among them.
    private mutating func evictPartitioned() -> [Action] {
        var actions: [Action] = []
        while true {
            let members = Set(ring.compactMap { peers[$0]?.id })
            let partitioned = linkStrikes.filter { $0.value >= Self.partitionStrikes && members.contains($0.key.low) && members.contains($0.key.high) }
                .keys.sorted()
            guard !partitioned.isEmpty else { return actions }
            var named: [PeerID: Int] = [:]
            for pair in partitioned {
                named[pair.low, default: 0] += 1
                named[pair.high, default: 0] += 1
            }
            let victim = named.max { $0.value != $1.value ? $0.value < $1.value : $0.key < $1.key }!.key
            let unreachable = partitioned.filter { $0.contains(victim) }.map { $0.low == victim ? $0.high : $0.low }
            guard let connection = ring.first(where: { peers[$0]?.id == victim }) else { return actions }
            peers[connection] = nil
            ring.removeAll { $0 == connection }
            linkStrikes = linkStrikes.filter { !$0.key.contains(victim) }
            let others = unreachable.map { "peer \($0)" }.joined(separator: ", ")
            actions += [.send(connection, .rejected("evicted for a partition: peer \(victim) and \(others) could not connect in \(Self.partitionStrikes) epochs in a row")),
                        .close(connection)]
        }
    }

    private mutating func formTopologyIfReady() -> [Action] {
        // The group's own members may be about to return.
        guard adoption == nil, !(holdingFirstAdmission && epoch == 0) else { return [] }
        let atSafePoint = ring.compactMap { peers[$0] }.allSatisfy { $0.requestedMinimum != nil }
        let evictions = atSafePoint ? evictPartitioned() : []
        return evictions + formTopology()
    }

    /// The current epoch's members in ring order, as a topology message names them.
    private var currentTopology: Topology {
        Topology(epoch: epoch, members: ring.compactMap { peers[$0] }.map { Member(id: $0.id, address: $0.address) })
    }

    private mutating func formTopology() -> [Action] {
        let members = ring.compactMap { peers[$0] }
        // Waiting peers join only when every member admits (a member re-forming after a failure
        // may keep them waiting until the program's own safe point).
        let admitting = members.allSatisfy { $0.role == .leaving || $0.admitting }
        let pending = admitting ? peers.values.filter { $0.role == .pending }.sorted { $0.id < $1.id }.map(\.connection) : []
        if members.isEmpty && pending.isEmpty { return [] }
        if !members.isEmpty {
            guard members.allSatisfy({ $0.requestedMinimum != nil }) else { return [] }
            let stayers = members.filter { $0.role == .member }.count
            let minimum = Int(members.compactMap(\.requestedMinimum).max() ?? 0)
            if stayers > 0 && stayers + pending.count < minimum { return [] }
        }
        var actions: [Action] = []
        for leaver in members where leaver.role == .leaving {
            peers[leaver.connection] = nil
            actions.append(.send(leaver.connection, .left))
        }
        ring = Self.ringOrder(of: members.filter { $0.role == .member }) + pending
        epoch += 1
        struckThisEpoch = []
        lastDecidedOp = 0
        reports = [:]
        early = [:]
        recentOutcomes = [:]
        arrivals = [:]
        syncDigests = [:]
        syncInTransfer = nil
        brokenReason = nil
        safePointRequested = false
        for connection in ring {
            peers[connection]?.role = .member
            peers[connection]?.requestedMinimum = nil
            peers[connection]?.admitting = true
            peers[connection]?.proposedOrder = []
            peers[connection]?.reportedThrough = 0
        }
        fenced = []
        fenceReason = nil
        lostInEpoch = nil
        pairEpoch = ring.count == 2
        pairFailure = nil
        neverVouched = []
        let topology = currentTopology
        actions += ring.map { .send($0, .topology(topology)) }
        return actions + pendingChanged()
    }

    /// The staying members in the order they proposed (`updateTopology`'s `ringOrder`), when every
    /// member that proposed one proposed the same and it names each of them once (ids of leavers
    /// are passed over); otherwise in their current order.
    private static func ringOrder(of stayers: [Peer]) -> [Connection] {
        let current = stayers.map(\.connection)
        let proposals = Set(stayers.map(\.proposedOrder).filter { !$0.isEmpty })
        guard proposals.count == 1, let proposal = proposals.first else { return current }
        let byID = Dictionary(uniqueKeysWithValues: stayers.map { ($0.id, $0.connection) })
        let proposed = proposal.compactMap { byID[$0] }
        return proposed.count == current.count && Set(proposed).count == current.count ? proposed : current
    }

    // MARK: - Rejoining and adoption

    private mutating func rejoin(_ connection: Connection, _ rejoin: Rejoin) -> [Action] {
        let fresh = epoch == 0 && ring.isEmpty
        let sameGroup = rejoin.group == group // while adopting, the adopted group's
        guard sameGroup || (fresh && adoption == nil) else {
            return [.send(connection, .rejected("this master serves another group")), .close(connection)]
        }
        if sameGroup, let old = peers.first(where: { $0.value.id == rejoin.peer })?.key {
            return resume(from: old, on: connection, rejoin)
        }
        if rejoin.topology.epoch == 0 && adoption == nil && !fresh {
            // Never admitted: it waits for admission here again, under its id (nobody holds it).
            nextPeerID = max(nextPeerID, rejoin.peer + 1)
            peers[connection] = Peer(id: rejoin.peer, connection: connection, address: rejoin.listen, role: .pending)
            return [.send(connection, .resumed)] + pendingChanged() + formTopologyIfReady()
        }
        guard adoption != nil || fresh else {
            return [.send(connection, .rejected("peer \(rejoin.peer) is not in this master's group (it was dropped, or this master formed its own group)")),
                    .close(connection)]
        }
        let starting = adoption == nil
        if starting {
            adoption = Adoption(topology: rejoin.topology)
            group = rejoin.group // the first to return names it
        }
        // Ids stay unique across masters: the old master may have given ids that no returning
        // member knows (to a peer it dropped, to a newcomer never admitted) and that may still
        // return, so this master gives ids of a new generation (the high 32 bits) above every one
        // it hears of. Peers that registered here before or meanwhile join the adopted group: they
        // get a new-generation id and the group's identity (they have used their id nowhere yet).
        let heard = ([rejoin.peer] + rejoin.topology.members.map(\.id)).max() ?? 0
        let generation = (heard >> 32) + 1
        var actions: [Action] = []
        if nextPeerID >> 32 < generation {
            nextPeerID = generation << 32 | 1
            for holder in peers.keys.sorted(by: { peers[$0]!.id < peers[$1]!.id }) {
                peers[holder]?.id = nextPeerID
                nextPeerID += 1
                actions.append(.send(holder, .registered(peers[holder]!.id, group: group)))
            }
        } else if starting {
            for (holder, peer) in peers { actions.append(.send(holder, .registered(peer.id, group: group))) }
        }
        if rejoin.topology.epoch > adoption!.topology.epoch { adoption!.topology = rejoin.topology }
        adoption!.returned[connection] = rejoin
        if adoption!.isComplete { actions += endAdoption() }
        return actions
    }

    /// A peer this master counts moved to a new connection (its side of the old one failed).
    private mutating func resume(from old: Connection, on connection: Connection, _ rejoin: Rejoin) -> [Action] {
        guard var peer = peers.removeValue(forKey: old) else { return [] }
        peer.connection = connection
        peers[connection] = peer
        ring = ring.map { $0 == old ? connection : $0 }
        if let report = reports.removeValue(forKey: old) { reports[connection] = report }
        if let arrival = arrivals.removeValue(forKey: old) { arrivals[connection] = arrival }
        if let digest = syncDigests.removeValue(forKey: old) { syncDigests[connection] = digest }
        for opID in early.keys {
            early[opID] = early[opID]!.map { $0.connection == old ? (connection, $0.message) : $0 }
        }
        return [.close(old), .send(connection, .resumed)] + (rankOf[connection] != nil ? catchUp(connection, rejoin, currentTopology) : [])
    }

    /// What a member that rejoined missed: the topology of the current epoch, or the verdicts after
    /// the last one it holds (of its operations in flight, at most `operationWindow`). A member that
    /// holds the newest already (it committed it among the members) still gets its verdict: its
    /// count of the master's verdicts paces how far ahead it runs, and a master that adopted the
    /// group from that commit has nothing else to tell it.
    private func catchUp(_ connection: Connection, _ rejoin: Rejoin, _ current: Topology) -> [Action] {
        if rejoin.topology.epoch < epoch { return [.send(connection, .topology(current))] }
        guard lastDecidedOp > 0, rejoin.lastDecidedOp <= lastDecidedOp else { return [] }
        let missed = rejoin.lastDecidedOp == lastDecidedOp ? [] : (rejoin.lastDecidedOp + 1 ... lastDecidedOp).compactMap { opID in recentOutcomes[opID].map { (opID, $0) } }
        let verdicts = missed.isEmpty ? [(lastDecidedOp, lastOutcome)] : missed
        return verdicts.map { .send(connection, .verdict(epoch: epoch, opID: $0.0, outcome: $0.1)) }
    }

    /// Ends a re-adoption with the members that returned (called when the last one returns, or by
    /// the shell when its window passes): the group goes on in its epoch without the others.
    public mutating func endAdoption() -> [Action] {
        guard let adopted = adoption else { return [] }
        adoption = nil
        let topology = adopted.topology
        epoch = topology.epoch
        pairEpoch = topology.members.count == 2
        let current = adopted.returned.values.filter { $0.topology.epoch == topology.epoch }
        let latest = current.max { $0.lastDecidedOp < $1.lastDecidedOp }
        lastDecidedOp = latest?.lastDecidedOp ?? 0
        lastOutcome = latest?.lastOutcome ?? .success
        if case .aborted(let reason) = lastOutcome { brokenReason = reason }
        lastSyncedRevision = adopted.returned.values.compactMap(\.lastSyncedRevision).max()
        let byID = Dictionary(adopted.returned.map { ($0.value.peer, $0.key) }, uniquingKeysWith: { a, _ in a })
        ring = topology.members.compactMap { byID[$0.id] }
        for member in topology.members {
            if let connection = byID[member.id] { peers[connection] = Peer(id: member.id, connection: connection, address: member.address, role: .member) }
        }
        var actions: [Action] = []
        for (connection, rejoin) in adopted.returned.sorted(by: { $0.value.peer < $1.value.peer }) {
            if rankOf[connection] != nil {
                // The topology as the others hold it, members that did not return included.
                actions += [.send(connection, .resumed)] + catchUp(connection, rejoin, topology)
            } else if rejoin.topology.epoch == 0 {
                peers[connection] = Peer(id: rejoin.peer, connection: connection, address: rejoin.listen, role: .pending)
                actions.append(.send(connection, .resumed))
            } else if rejoin.leaving {
                actions += [.send(connection, .left), .close(connection)]
            } else {
                actions += [.send(connection, .rejected("epoch \(topology.epoch) was formed without peer \(rejoin.peer)")), .close(connection)]
            }
        }
        if let lost = topology.members.first(where: { byID[$0.id] == nil }), brokenReason == nil {
            brokenReason = .peerLost(lost.id)
            actions += decide(opID: lastDecidedOp + 1, .aborted(.peerLost(lost.id)))
        }
        return actions + pendingChanged() + formTopologyIfReady()
    }

    // MARK: - Verdicts

    /// What decides whether a member's message about operation `opID` counts: nil when it does, or
    /// the actions that answer it instead (a stale epoch, an operation already decided, one further
    /// ahead than the window; one within it was held by `holdEarly`).
    private mutating func screen(_ connection: Connection, epoch messageEpoch: UInt64, opID: UInt64) -> [Action]? {
        // A leaver's reports of operations it did before it asked to leave still count.
        guard let peer = peers[connection], peer.role != .pending, rankOf[connection] != nil else { return [] }
        guard messageEpoch == epoch else {
            return [.send(connection, .verdict(epoch: messageEpoch, opID: opID, outcome: .aborted(.staleEpoch)))]
        }
        if opID <= lastDecidedOp { return [] } // decided already; the verdict is on its way
        guard opID == lastDecidedOp + 1 else {
            let rank = rankOf[connection] ?? -1
            return abort(opID: lastDecidedOp + 1, .argumentMismatch(
                "rank \(rank) (peer \(peer.id)) started its operation \(opID) while the group is at operation \(lastDecidedOp + 1), more than \(Self.operationWindow) ahead: the members called a different number of collectives"))
        }
        return nil
    }

    /// Keeps a member's message about an operation after the undecided one, within the window (see
    /// "operations in flight"), until the operations before it are decided; true when it was kept.
    /// A member sends at most one message of each kind per operation; repeats are dropped.
    private mutating func holdEarly(_ message: PeerToMaster, epoch messageEpoch: UInt64, opID: UInt64,
                                    from connection: Connection) -> Bool {
        guard messageEpoch == epoch, let role = peers[connection]?.role, role != .pending,
              opID > lastDecidedOp + 1, opID - lastDecidedOp <= Self.operationWindow else { return false }
        if early[opID]?.contains(where: { $0.connection == connection && Self.sameKind($0.message, message) }) != true {
            early[opID, default: []].append((connection, message))
        }
        return true
    }

    private static func sameKind(_ a: PeerToMaster, _ b: PeerToMaster) -> Bool {
        switch (a, b) {
        case (.begin, .begin), (.report, .report), (.syncState, .syncState): true
        default: false
        }
    }

    /// The held messages of the operation that has just become the undecided one, in arrival order.
    private mutating func takeEarly() -> [Action] {
        guard let held = early.removeValue(forKey: lastDecidedOp + 1) else { return [] }
        var actions: [Action] = []
        for (connection, message) in held { actions += received(message, from: connection) }
        return actions
    }

    /// Records a member's arrival at the undecided operation; the mismatch's abort when its call
    /// differs from an earlier member's.
    private mutating func arrive(_ connection: Connection, opID: UInt64, _ descriptor: OperationDescriptor) -> [Action]? {
        guard arrivals[connection] == nil else { return nil }
        // The arrivals so far are all equal (a difference aborts, and the verdict clears them), so
        // one of them stands for all: O(1) per arrival, not O(n).
        let agreed = arrivals.values.first
        arrivals[connection] = descriptor
        guard let agreed, agreed != descriptor else { return nil }
        return abort(opID: opID, .argumentMismatch(mismatchDetail(opID: opID)))
    }

    private mutating func begin(from connection: Connection, epoch beginEpoch: UInt64, opID: UInt64,
                                _ descriptor: OperationDescriptor) -> [Action] {
        if let answer = screen(connection, epoch: beginEpoch, opID: opID) { return answer }
        if let reason = brokenReason, syncInTransfer?.opID != opID { return decide(opID: opID, .aborted(reason)) }
        if let conflict = safePointConflict(opID: opID) { return conflict }
        return arrive(connection, opID: opID, descriptor) ?? []
    }

    private mutating func report(from connection: Connection, epoch reportEpoch: UInt64, opID: UInt64,
                                 _ report: Report) -> [Action] {
        if let answer = screen(connection, epoch: reportEpoch, opID: opID) { return answer }
        let transferring = syncInTransfer?.opID == opID
        if !transferring, let reason = brokenReason { return decide(opID: opID, .aborted(reason)) }
        if !transferring, let conflict = safePointConflict(opID: opID) { return conflict }
        if !transferring, let mismatch = arrive(connection, opID: opID, report.descriptor) { return mismatch }
        switch report.outcome {
        case .aborted(.timedOut(let reporter, _)) where !transferring && reports[connection] != nil:
            // It vouched for the operation: fence the members that have not reported it.
            return fenceUnreported(opID: opID, reason: .timedOut(reporter: reporter, notArrived: []))
        case .aborted(.timedOut(let reporter, _)):
            let reason = AbortReason.timedOut(reporter: reporter, notArrived: ranksNotArrived())
            return holdPairFailure(connection, opID: opID, report.descriptor, reason) ?? abort(opID: opID, reason)
        case .aborted(let reason):
            recordLinkFailure(reason)
            // After a loss, the survivors' failures are its effects: the verdict names the cause.
            let cause = lostInEpoch.map { .peerLost($0) } ?? reason
            return holdPairFailure(connection, opID: opID, report.descriptor, cause) ?? abort(opID: opID, cause)
        case .success:
            reports[connection] = report
            // A pair member that reported without committing never commits (see "a pair").
            if let held = pairFailure { return abort(opID: opID, held.reason) }
            return decideIfAllReported(opID: opID)
        }
    }

    /// Holds a pair member's failure of operation `opID` while the other member may have committed
    /// it, and fences that member (see "a pair"); nil when the failure aborts the operation at once.
    private mutating func holdPairFailure(_ connection: Connection, opID: UInt64, _ descriptor: OperationDescriptor,
                                          _ reason: AbortReason) -> [Action]? {
        guard pairEpoch, ring.count == 2, descriptor.commitsAmongMembers, syncInTransfer == nil,
              let other = ring.first(where: { $0 != connection }), reports[other] == nil else { return nil }
        pairFailure = (connection, reason)
        if neverVouched.contains(other) { return abort(opID: opID, reason) }
        return fenceUnreported(opID: opID, reason: reason)
    }

    /// True in a pair epoch when no member left can commit the undecided operation (see "a pair").
    private func noMemberCanCommit() -> Bool {
        ring.allSatisfy { reports[$0] != nil || neverVouched.contains($0) || pairFailure?.connection == $0 }
    }

    /// True when operation `opID` of the epoch is decided a success (a success decides every
    /// operation before it; the recent ones are kept, and an adopted epoch has its last verdict).
    private func decidedSuccess(_ opID: UInt64) -> Bool {
        guard opID <= lastDecidedOp else { return false }
        return recentOutcomes[opID].map { $0 == .success } ?? (lastOutcome == .success)
    }

    /// Evicts a pair member that failed operation `opID`, which the other member committed: it
    /// cannot return the result, and it would be a survivor with another outcome.
    private mutating func evict(_ connection: Connection, failed opID: UInt64, _ reason: AbortReason) -> [Action] {
        guard let peer = peers[connection] else { return [] }
        let partner = ring.first { $0 != connection }.flatMap { peers[$0]?.id }.map { "peer \($0)" } ?? "the other member"
        let why = "evicted: \(partner) committed operation \(opID) of epoch \(epoch), which peer \(peer.id) could not finish (\(reason)); "
            + "in a group of two a member commits once it holds both contributions, so the other one must rejoin"
        return [.send(connection, .rejected(why)), .close(connection)] + connectionClosed(connection)
    }

    /// The abort of operation `opID` when a member already waits at the safe point: it will not
    /// call the operation, so the members that did must not wait for it.
    private mutating func safePointConflict(opID: UInt64) -> [Action]? {
        // Asked on every begin and report, so the search runs only once a member asked in this
        // epoch (it may have left since; the search tells).
        guard safePointRequested else { return nil }
        for connection in ring {
            // A member that reported this operation did it before it asked (and may have committed it).
            guard let waiting = peers[connection], waiting.requestedMinimum != nil, waiting.reportedThrough < opID else { continue }
            return abort(opID: opID, waiting.role == .leaving ? .peerLeft(waiting.id) : .topologyUpdateRequested(waiting.id))
        }
        return nil
    }

    /// The ranks that have sent nothing for the undecided operation.
    private func ranksNotArrived() -> [UInt32] {
        ring.enumerated().filter { arrivals[$0.element] == nil && syncDigests[$0.element] == nil }.map { UInt32($0.offset) }
    }

    /// Names the first field on which the members' calls differ, its values and who passed which.
    private func mismatchDetail(opID: UInt64) -> String {
        let calls = ring.enumerated().compactMap { rank, connection in arrivals[connection].map { (rank, naming($0)) } }
        var text = "operation \(opID) of epoch \(epoch): "
        let fieldCount = calls.map(\.1.count).max() ?? 0
        for index in 0 ..< fieldCount {
            guard Set(calls.map { index < $0.1.count ? $0.1[index].value : "-" }).count > 1 else { continue }
            // A different collective (field 0) is shown as the whole call.
            func value(_ fields: [DescriptorField]) -> String {
                guard index < fields.count else { return "-" }
                guard index == 0 else { return fields[index].value }
                let arguments = fields.dropFirst().map { "\($0.name) \($0.value)" }.joined(separator: ", ")
                return arguments.isEmpty ? fields[0].value : "\(fields[0].value)(\(arguments))"
            }
            let values = calls.map { (rank: $0.0, value: value($0.1)) }
            let name = calls.first { index < $0.1.count }!.1[index].name
            var groups: [(value: String, ranks: [Int])] = []
            for (rank, value) in values {
                if let at = groups.firstIndex(where: { $0.value == value }) { groups[at].ranks.append(rank) } else { groups.append((value, [rank])) }
            }
            text += "\(name) differs: " + groups.map { "\($0.value) at \(rankList($0.ranks))" }.joined(separator: "; ")
            break
        }
        let missing = ranksNotArrived()
        if !missing.isEmpty { text += " (\(rankList(missing.map(Int.init))) had not called it yet)" }
        return text
    }

    /// A member committed `opID` among the members: it and every earlier operation of the epoch
    /// succeeded (every member vouched for it, so none reports a failure of any of them). One such
    /// message decides them all: a member that stopped with its reports queued holds nothing up.
    /// The members hear only of the last success: a member takes a success as the verdict of
    /// every earlier operation too (`PeerStateMachine.verdict(for:)`), so the earlier ones are
    /// decided without a verdict each (members send `committed` every half window, so one
    /// message decides several operations).
    private mutating func committed(from connection: Connection, epoch commitEpoch: UInt64, opID: UInt64) -> [Action] {
        guard let peer = peers[connection], peer.role != .pending, rankOf[connection] != nil, commitEpoch == epoch,
              opID > lastDecidedOp, opID - lastDecidedOp <= Self.operationWindow,
              brokenReason == nil, syncInTransfer == nil else { return [] }
        var actions: [Action] = []
        var untold: UInt64?
        while lastDecidedOp < opID, brokenReason == nil {
            let next = lastDecidedOp + 1
            actions += decide(opID: next, .success, tellingMembers: next == opID)
            untold = next == opID ? nil : next
        }
        // Stopped short (a message held for a later operation aborted it): the successes before
        // it still reach the members, ahead of the abort.
        if let untold { actions = verdicts(opID: untold, .success) + actions }
        return actions
    }

    /// Fences every member that has not reported operation `opID` (once each), to abort it with
    /// `reason` if one of them never vouched: a member that reported success waited past its
    /// deadline for the others, a member was lost, or a member's links went silent (see "success
    /// without the master").
    private mutating func fenceUnreported(opID: UInt64, reason: AbortReason) -> [Action] {
        if fenceReason == nil { fenceReason = reason }
        let unreported = ring.filter { reports[$0] == nil && !fenced.contains($0) && pairFailure?.connection != $0 }
        fenced.formUnion(unreported)
        return unreported.map { .fence($0, epoch: epoch, opID: opID) }
    }

    /// A fenced member's answer: one that never vouched for the undecided operation (and now never
    /// will) lets the master abort it; one that had vouched reports it soon.
    public mutating func fenceAnswered(_ connection: Connection, epoch answerEpoch: UInt64, opID: UInt64, vouched: Bool) -> [Action] {
        guard answerEpoch == epoch, opID == lastDecidedOp + 1, fenced.remove(connection) != nil, !vouched,
              brokenReason == nil else { return [] }
        if pairEpoch {
            // One member that never vouched does not stop the other committing (see "a pair").
            neverVouched.insert(connection)
            guard noMemberCanCommit() else { return [] }
        }
        if let lost = lostInEpoch { return abort(opID: opID, .peerLost(lost)) }
        switch fenceReason {
        case .timedOut(let reporter, _)?: return abort(opID: opID, .timedOut(reporter: reporter, notArrived: ranksNotArrived()))
        case let reason?: return abort(opID: opID, reason)
        case nil: return []
        }
    }

    private mutating func decideIfAllReported(opID: UInt64) -> [Action] {
        guard !ring.isEmpty, reports.count == ring.count else { return [] }
        let first = reports.values.first!.descriptor
        guard reports.values.allSatisfy({ $0.descriptor == first }) else {
            return abort(opID: opID, .argumentMismatch("operation \(opID) of epoch \(epoch): the members' reports describe different calls"))
        }
        if let transfer = syncInTransfer, transfer.opID == opID { lastSyncedRevision = transfer.plan.revision }
        return decide(opID: opID, .success)
    }

    private mutating func syncState(from connection: Connection, epoch reportEpoch: UInt64, opID: UInt64,
                                    _ digest: StateDigest) -> [Action] {
        if let answer = screen(connection, epoch: reportEpoch, opID: opID) { return answer }
        // A member that rejoined asks again for the plan it may have missed.
        if let transfer = syncInTransfer, transfer.opID == opID { return [.send(connection, .syncPlan(epoch: epoch, opID: opID, transfer.plan))] }
        if let reason = brokenReason { return decide(opID: opID, .aborted(reason)) }
        if let conflict = safePointConflict(opID: opID) { return conflict }
        let call = OperationDescriptor(collective: OperationDescriptor.synchronizeCollective, dataType: 0, reduceOp: 0,
                                       count: UInt64(digest.tensors.count))
        if let mismatch = arrive(connection, opID: opID, call) { return mismatch }
        if let earlier = syncDigests[connection] {
            guard earlier != digest else { return [] } // sent again by a member that rejoined
            return abort(opID: opID, .argumentMismatch("operation \(opID) of epoch \(epoch): a second synchronization message from one member"))
        }
        syncDigests[connection] = digest
        guard syncDigests.count == ring.count else { return [] }
        let digests = ring.map { (peer: peers[$0]!.id, digest: syncDigests[$0]!) }
        syncDigests = [:]
        switch StateElection.elect(digests, lastRevision: lastSyncedRevision) {
        case .rejected(let reason):
            return abort(opID: opID, reason)
        case .upToDate(let revision):
            lastSyncedRevision = revision
            return decide(opID: opID, .success)
        case .transfer(let plan):
            syncInTransfer = (opID, plan)
            return ring.map { .send($0, .syncPlan(epoch: epoch, opID: opID, plan)) }
        }
    }

    private mutating func abort(opID: UInt64, _ reason: AbortReason) -> [Action] {
        brokenReason = reason
        return decide(opID: opID, .aborted(reason))
    }

    /// Decides operation `opID`; `tellingMembers` false leaves its verdict to a later success
    /// (`committed`).
    private mutating func decide(opID: UInt64, _ outcome: Outcome, tellingMembers: Bool = true) -> [Action] {
        let evicted = outcome == .success ? pairFailure : nil
        if outcome == .success { linkStrikes = [:] } // every pair of this epoch connected
        lastDecidedOp = opID
        lastOutcome = outcome
        recentOutcomes[opID] = outcome
        if opID > Self.operationWindow { recentOutcomes[opID - Self.operationWindow] = nil }
        reports = [:]
        arrivals = [:]
        fenced = []
        fenceReason = nil
        pairFailure = nil
        neverVouched = []
        syncDigests = [:]
        syncInTransfer = nil
        var actions = (tellingMembers ? verdicts(opID: opID, outcome) : []) + takeEarly()
        // The other member of the pair committed it (see "a pair"): evicted once it is decided, so
        // its loss concerns the operations after it.
        if let evicted { actions += evict(evicted.connection, failed: opID, evicted.reason) }
        // After a loss the master catches up with reports sent for later: the members may be
        // stuck in a later operation, which a fence ends at once as it did the one undecided then.
        guard let lost = lostInEpoch, brokenReason == nil else { return actions }
        return actions + fenceUnreported(opID: lastDecidedOp + 1, reason: .peerLost(lost))
    }

    /// The verdict of `opID`, to every member.
    private func verdicts(opID: UInt64, _ outcome: Outcome) -> [Action] {
        ring.map { .send($0, .verdict(epoch: epoch, opID: opID, outcome: outcome)) }
    }
}
