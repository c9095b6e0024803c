/// The master's membership and verdict logic as a pure state machine (the shape of SWIM's
/// `SWIMInstance`): the shell feeds it connection events and decoded messages and carries out the
/// actions it returns. No I/O, no clocks; liveness comes in as `connectionClosed` from the transport,
/// whose heartbeats and idle timeouts turn a hung peer into a closed connection.
///
/// Terms:
/// - pending peer: registered, waiting for admission at the next safe point;
/// - member: in the current epoch's ring; its index in `ring` is its rank;
/// - safe point: every member has asked for a topology update (or to leave), so the master may
///   admit pending peers, drop leavers, and start a new epoch;
/// - verdict: the one outcome of operation `opID` in an epoch. Success needs a success report from
///   every member with identical descriptors; the first failure report or lost member aborts it.
///   After an abort the epoch is broken: every later operation in it aborts with the same reason,
///   until the members re-form the ring with an update.
/// - synchronization: an operation whose members first send their shared-state digests; once all
///   have, the master elects (`StateElection`) and either decides success at once (nobody outdated)
///   or sends the plan. From then on a lost member does not abort it (receivers replace a lost
///   source); the epoch is still broken for the operations after it.
public struct MasterStateMachine<Connection: Hashable & Sendable>: Sendable {
    public enum Action: Hashable, Sendable {
        case send(Connection, MasterToPeer)
        /// Close after sending anything queued before this action.
        case close(Connection)
    }

    private enum Role: Hashable, Sendable {
        case pending
        case member
        case leaving
    }

    private struct Peer: Sendable {
        let id: PeerID
        let connection: Connection
        let address: PeerAddress
        var role: Role
        var requestedMinimum: UInt32? // set while the member waits at the safe point
    }

    private struct Report: Sendable {
        let descriptor: OperationDescriptor
        let outcome: Outcome
    }

    private var peers: [Connection: Peer] = [:]
    private var nextPeerID: PeerID = 1
    public private(set) var epoch: UInt64 = 0
    /// Members in ring order.
    private var ring: [Connection] = []
    private var lastDecidedOp: UInt64 = 0
    private var reports: [Connection: Report] = [:]
    private var brokenReason: AbortReason?
    /// Digests of the synchronization that is electing (operation `lastDecidedOp + 1`).
    private var syncDigests: [Connection: StateDigest] = [:]
    /// The synchronization whose plan went out, and the revision it elected.
    private var syncInTransfer: (opID: UInt64, revision: UInt64)?
    /// The revision of the last successful synchronization (kept across epochs).
    public private(set) var lastSyncedRevision: UInt64?

    public init() {}

    /// Peers waiting for admission.
    public var pendingCount: Int { peers.values.filter { $0.role == .pending }.count }
    /// Members of the current epoch.
    public var worldSize: Int { ring.count }
    /// Everyone with a live registration.
    public var registeredCount: Int { peers.count }

    // MARK: - Events

    public mutating func received(_ message: PeerToMaster, from connection: Connection) -> [Action] {
        if case .register(let address) = message { return register(connection, address: address) }
        guard let peer = peers[connection] else {
            return [.send(connection, .rejected("register before anything else")), .close(connection)]
        }
        switch message {
        case .register:
            return [.send(connection, .rejected("already registered as peer \(peer.id)")), .close(connection)]
        case .updateTopology(_, let minimum):
            guard peer.role == .member else { return [] } // pending peers wait for admission anyway
            peers[connection]?.requestedMinimum = minimum
            return formTopologyIfReady()
        case .leave:
            if peer.role == .pending {
                peers[connection] = nil
                return [.send(connection, .left)] + pendingChanged()
            }
            peers[connection]?.role = .leaving
            peers[connection]?.requestedMinimum = 0
            // The leaver takes part in no further operation: abort the next one (members that check
            // `membershipPending` first call updateTopology instead and never see it).
            var actions: [Action] = []
            if brokenReason == nil { actions += abort(opID: lastDecidedOp + 1, .peerLeft(peer.id)) }
            return actions + pendingChanged() + formTopologyIfReady()
        case .report(let reportEpoch, let opID, let descriptor, let outcome):
            return report(from: connection, epoch: reportEpoch, opID: opID,
                          Report(descriptor: descriptor, outcome: outcome))
        case .syncState(let reportEpoch, let opID, let digest):
            return syncState(from: connection, epoch: reportEpoch, opID: opID, digest)
        }
    }

    /// A message that could not be decoded: the sender is cut off, as if it had crashed.
    public mutating func receivedMalformed(from connection: Connection, reason: String) -> [Action] {
        [.send(connection, .rejected(reason)), .close(connection)] + connectionClosed(connection)
    }

    /// The connection closed, failed, or went silent past the idle timeout.
    public mutating func connectionClosed(_ connection: Connection) -> [Action] {
        guard let peer = peers.removeValue(forKey: connection) else { return [] }
        if peer.role == .pending { return pendingChanged() }
        ring.removeAll { $0 == connection }
        reports[connection] = nil
        var actions: [Action] = []
        if let transfer = syncInTransfer {
            // The transfer goes on without it; the operations after it abort.
            if brokenReason == nil { brokenReason = .peerLost(peer.id) }
            actions += decideIfAllReported(opID: transfer.opID)
        } else if brokenReason == nil {
            brokenReason = .peerLost(peer.id)
            actions += decide(opID: lastDecidedOp + 1, .aborted(.peerLost(peer.id)))
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
        return [.send(connection, .registered(id))] + pendingChanged() + formTopologyIfReady()
    }

    private func pendingChanged() -> [Action] {
        let leaving = UInt32(peers.values.filter { $0.role == .leaving }.count)
        let message = MasterToPeer.membershipPending(joining: UInt32(pendingCount), leaving: leaving)
        return ring.map { .send($0, message) }
    }

    private mutating func formTopologyIfReady() -> [Action] {
        let pending = peers.values.filter { $0.role == .pending }.sorted { $0.id < $1.id }.map(\.connection)
        let members = ring.compactMap { peers[$0] }
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
        ring = members.filter { $0.role == .member }.map(\.connection) + pending
        epoch += 1
        lastDecidedOp = 0
        reports = [:]
        syncDigests = [:]
        syncInTransfer = nil
        brokenReason = nil
        for connection in ring {
            peers[connection]?.role = .member
            peers[connection]?.requestedMinimum = nil
        }
        let topology = Topology(epoch: epoch, members: ring.compactMap { peers[$0] }.map {
            Member(id: $0.id, address: $0.address)
        })
        actions += ring.map { .send($0, .topology(topology)) }
        return actions + pendingChanged()
    }

    // MARK: - Verdicts

    private mutating func report(from connection: Connection, epoch reportEpoch: UInt64, opID: UInt64,
                                 _ report: Report) -> [Action] {
        guard peers[connection]?.role == .member else { return [] }
        guard reportEpoch == epoch else {
            return [.send(connection, .verdict(epoch: reportEpoch, opID: opID, outcome: .aborted(.staleEpoch)))]
        }
        if opID <= lastDecidedOp { return [] } // decided already; the verdict is on its way
        guard opID == lastDecidedOp + 1 else { return abort(opID: opID, .argumentMismatch) }
        let transferring = syncInTransfer?.opID == opID
        if !transferring, let reason = brokenReason { return decide(opID: opID, .aborted(reason)) }
        // Some members entered a synchronization and this one another collective.
        guard syncDigests.isEmpty else { return abort(opID: opID, .argumentMismatch) }
        if case .aborted(let reason) = report.outcome { return abort(opID: opID, reason) }
        reports[connection] = report
        return decideIfAllReported(opID: opID)
    }

    private mutating func decideIfAllReported(opID: UInt64) -> [Action] {
        guard !ring.isEmpty, reports.count == ring.count else { return [] }
        let first = reports.values.first!.descriptor
        guard reports.values.allSatisfy({ $0.descriptor == first }) else { return abort(opID: opID, .argumentMismatch) }
        if let transfer = syncInTransfer, transfer.opID == opID { lastSyncedRevision = transfer.revision }
        return decide(opID: opID, .success)
    }

    private mutating func syncState(from connection: Connection, epoch reportEpoch: UInt64, opID: UInt64,
                                    _ digest: StateDigest) -> [Action] {
        guard peers[connection]?.role == .member else { return [] }
        guard reportEpoch == epoch else {
            return [.send(connection, .verdict(epoch: reportEpoch, opID: opID, outcome: .aborted(.staleEpoch)))]
        }
        if opID <= lastDecidedOp { return [] }
        guard opID == lastDecidedOp + 1, reports.isEmpty, syncInTransfer == nil, syncDigests[connection] == nil else {
            return abort(opID: opID, .argumentMismatch)
        }
        if let reason = brokenReason { return decide(opID: opID, .aborted(reason)) }
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
            syncInTransfer = (opID, plan.revision)
            return ring.map { .send($0, .syncPlan(epoch: epoch, opID: opID, plan)) }
        }
    }

    private mutating func abort(opID: UInt64, _ reason: AbortReason) -> [Action] {
        brokenReason = reason
        return decide(opID: opID, .aborted(reason))
    }

    private mutating func decide(opID: UInt64, _ outcome: Outcome) -> [Action] {
        lastDecidedOp = opID
        reports = [:]
        syncDigests = [:]
        syncInTransfer = nil
        return ring.map { .send($0, .verdict(epoch: epoch, opID: opID, outcome: outcome)) }
    }
}
