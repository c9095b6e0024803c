/// The control-plane messages, named by direction as PCCL does: peer to master, master to peer,
/// peer to peer. Each travels as the payload of one control frame; its first byte is its kind.

/// A peer's stable identity, assigned by the master at registration.
public typealias PeerID = UInt64

/// Where a peer listens for its ring neighbours.
public struct PeerAddress: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: UInt16
    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// One member of a topology, in ring order.
public struct Member: Hashable, Sendable {
    public var id: PeerID
    public var address: PeerAddress
    public init(id: PeerID, address: PeerAddress) {
        self.id = id
        self.address = address
    }
}

/// The membership of one epoch: members in ring order (a member's index is its rank).
public struct Topology: Hashable, Sendable {
    public var epoch: UInt64
    public var members: [Member]
    public init(epoch: UInt64, members: [Member]) {
        self.epoch = epoch
        self.members = members
    }
}

/// Why a collective was aborted. Every survivor receives the same reason.
public enum AbortReason: Hashable, Sendable, CustomStringConvertible {
    /// The master lost a member (its connection closed or went silent).
    case peerLost(PeerID)
    /// A member asked to leave while the others had started this operation.
    case peerLeft(PeerID)
    /// A member went to the safe point (`updateTopology`, usually because a peer waits to join or
    /// leave) while others had started this operation; they retry after their own update.
    case topologyUpdateRequested(PeerID)
    /// A member's link to `peer` (nil: not known) failed, or could not be connected.
    case linkFailed(reporter: PeerID, peer: PeerID?, detail: String)
    /// A member's wait passed the operation deadline. `notArrived`: the ranks that had not called
    /// the operation by then (filled in by the master; empty when everyone had).
    case timedOut(reporter: PeerID, notArrived: [UInt32])
    /// Members called different collectives, or the same one with different arguments, or in a
    /// different order. The detail names the field, the values and which ranks passed which.
    case argumentMismatch(String)
    /// The report named an epoch that is no longer current.
    case staleEpoch
    /// A shared-state synchronization cannot succeed: the members' tensors differ in shape, no
    /// member holds a valid revision, or nobody may send.
    case stateMismatch(String)
    /// A send-only member does not hold the elected shared state.
    case stateSenderOutdated(PeerID)
    /// A receiver could not complete a shared-state transfer (every source lost, or a hash that
    /// did not verify).
    case stateTransferFailed(reporter: PeerID, detail: String)

    public var description: String {
        switch self {
        case .peerLost(let id): "peer \(id) was lost"
        case .peerLeft(let id): "peer \(id) left the group"
        case .topologyUpdateRequested(let id): "peer \(id) asked for a topology update instead of calling this operation"
        case .linkFailed(let reporter, let peer?, let detail): "peer \(reporter) cannot reach peer \(peer): \(detail)"
        case .linkFailed(let reporter, nil, let detail): "peer \(reporter) lost a link: \(detail)"
        case .timedOut(let reporter, let notArrived) where notArrived.isEmpty:
            "peer \(reporter) timed out waiting for the operation to finish"
        case .timedOut(let reporter, let notArrived):
            "peer \(reporter) timed out: \(rankList(notArrived.map(Int.init))) never called the operation"
        case .argumentMismatch(let detail): "peers called different collectives or different arguments: \(detail)"
        case .staleEpoch: "the operation belongs to an old epoch"
        case .stateMismatch(let why): "shared states cannot be synchronized: \(why)"
        case .stateSenderOutdated(let id): "send-only peer \(id) does not hold the elected shared state"
        case .stateTransferFailed(let reporter, let detail): "peer \(reporter) could not receive the shared state: \(detail)"
        }
    }
}

/// What a peer saw of an operation, or what the master decided.
public enum Outcome: Hashable, Sendable {
    case success
    case aborted(AbortReason)
}

/// What a collective was called with; the master checks that every member agrees.
public struct OperationDescriptor: Hashable, Sendable {
    public var collective: UInt8
    public var dataType: UInt8
    public var reduceOp: UInt8
    public var count: UInt64
    /// Whatever else members must agree on: the algorithm of an all-reduce, the root of a broadcast.
    public var detail: UInt64
    public init(collective: UInt8, dataType: UInt8, reduceOp: UInt8, count: UInt64, detail: UInt64 = 0) {
        self.collective = collective
        self.dataType = dataType
        self.reduceOp = reduceOp
        self.count = count
        self.detail = detail
    }
}

/// One named field of a descriptor, for messages ("count", "1024").
public typealias DescriptorField = (name: String, value: String)
/// Names a descriptor's fields, the collective first.
public typealias DescriptorNaming = @Sendable (OperationDescriptor) -> [DescriptorField]

extension OperationDescriptor {
    /// The collective code of a shared-state synchronization (its arrival is the `syncState` message).
    public static let synchronizeCollective: UInt8 = 7

    /// True for the collectives the members commit among themselves (DESIGN.md, "Success without
    /// the master"): codes 1-6, every one below the synchronization; it and the link measurement
    /// (8) wait for the master's election and plan.
    public var commitsAmongMembers: Bool { (1 ..< Self.synchronizeCollective).contains(collective) }

    /// The fields as numbers, for a master that was given no names.
    public static let numericFields: DescriptorNaming = { d in
        [("collective", "\(d.collective)"), ("data type", "\(d.dataType)"), ("operator", "\(d.reduceOp)"),
         ("count", "\(d.count)"), ("detail", "\(d.detail)")]
    }
}

/// What a peer that lost its master tells the master it reaches again: enough for that master to
/// resume the session, or for a restarted master to re-adopt the group.
public struct Rejoin: Hashable, Sendable {
    public var peer: PeerID
    /// The group the peer registered in (`registered`).
    public var group: UInt64
    /// The peer group it registered in (`register`).
    public var peerGroup: UInt32
    public var listen: PeerAddress
    /// The last topology the peer adopted (epoch 0 and no members: never admitted).
    public var topology: Topology
    /// The last operation of that epoch whose verdict the peer received (0: none), and the verdict.
    public var lastDecidedOp: UInt64
    public var lastOutcome: Outcome
    /// The revision of the last synchronization of shared state the peer completed, if any.
    public var lastSyncedRevision: UInt64?
    /// The peer asked to leave and has not been told it left.
    public var leaving: Bool

    public init(peer: PeerID, group: UInt64, peerGroup: UInt32 = 0, listen: PeerAddress, topology: Topology, lastDecidedOp: UInt64 = 0,
                lastOutcome: Outcome = .success, lastSyncedRevision: UInt64? = nil, leaving: Bool = false) {
        self.peer = peer
        self.group = group
        self.peerGroup = peerGroup
        self.listen = listen
        self.topology = topology
        self.lastDecidedOp = lastDecidedOp
        self.lastOutcome = lastOutcome
        self.lastSyncedRevision = lastSyncedRevision
        self.leaving = leaving
    }
}

public enum PeerToMaster: Hashable, Sendable {
    /// First message on a new master connection: where the peer listens, and the peer group it
    /// joins (`Configuration.peerGroup`; the master keeps each group's membership apart).
    case register(listen: PeerAddress, peerGroup: UInt32 = 0)
    /// The peer reached a safe point and lets the master re-form the ring. `admitting` false: only
    /// the current members re-form (lost ones dropped); waiting peers stay waiting unless every
    /// member admits. `ringOrder`, when not empty, proposes the members' order for the next epoch
    /// (peer ids; `Communicator.optimizeTopology()` sends the order it solved): the master takes it
    /// when every member that proposed one proposed the same and it names every staying member.
    case updateTopology(epoch: UInt64, minimumWorldSize: UInt32, admitting: Bool = true, ringOrder: [PeerID] = [])
    /// The peer starts operation `opID` (sent before its data moves, so the master compares the
    /// members' calls while the data is on its way and stops a mismatch in milliseconds).
    case begin(epoch: UInt64, opID: UInt64, descriptor: OperationDescriptor)
    /// The peer finished (or failed) its part of operation `opID`.
    case report(epoch: UInt64, opID: UInt64, descriptor: OperationDescriptor, outcome: Outcome)
    /// The members committed operation `opID` among themselves (every one of them vouched; see
    /// DESIGN.md, "Success without the master"): it and every earlier operation of the epoch
    /// succeeded. Stands for this peer's report of it.
    case committed(epoch: UInt64, opID: UInt64, descriptor: OperationDescriptor)
    /// The peer leaves at the next safe point.
    case leave(epoch: UInt64)
    /// The peer entered shared-state synchronization `opID` holding this state.
    case syncState(epoch: UInt64, opID: UInt64, StateDigest)
    /// First message on a new connection of a peer whose master connection failed (instead of
    /// `register`): resume this session. A master that counts the peer resumes it; one that formed
    /// no group yet re-adopts the group from its returning members; any other refuses (`rejected`).
    case rejoin(Rejoin)
    /// While epoch `epoch` formed, this peer could not connect to member `peer` (a dial that failed
    /// or timed out, or a link that never arrived). The master aborts the epoch's first operation so
    /// nobody waits out the connect timeout, and counts the pair towards a partition. Sent after a
    /// rejoin, before `resumed`: the peer's links to `peer` went silent while the master was away
    /// (a master re-adopting the group then does not wait for that member).
    case unreachable(epoch: UInt64, peer: PeerID, detail: String)
}

public enum MasterToPeer: Hashable, Sendable {
    /// The peer's id, and the group's: a random number the group's first master drew, which a
    /// rejoin must name (so a peer of another group that reaches this master, e.g. after a restart
    /// on a reused port, cannot take over a session with the same peer id).
    case registered(PeerID, group: UInt64)
    /// A new epoch; the receiver is admitted if it is among the members.
    case topology(Topology)
    /// The one outcome of operation `opID` that every member returns.
    case verdict(epoch: UInt64, opID: UInt64, outcome: Outcome)
    /// How many peers wait to be admitted and how many members wait to leave (sent to members when
    /// either changes): a training loop that sees a non-zero count calls `updateTopology()`.
    case membershipPending(joining: UInt32, leaving: UInt32)
    /// The peer's leave is complete.
    case left
    /// The master refuses the peer's message; the connection is closed after this.
    case rejected(String)
    /// Some member of synchronization `opID` is outdated: move the state as planned, then report.
    /// (When nobody is outdated the master sends the success verdict instead.)
    case syncPlan(epoch: UInt64, opID: UInt64, SyncPlan)
    /// The answer to `rejoin`: the session goes on; the peer sends again what the master has not
    /// answered yet. A topology or verdict the peer missed follows.
    case resumed
}

/// What a peer-to-peer connection carries.
public enum LinkKind: Hashable, Sendable {
    /// Lane `lane` of the sender's `lanes` parallel connections to its right ring neighbour.
    case ring(lane: UInt16, lanes: UInt16)
    /// The one connection between two members that non-ring algorithms use both ways.
    case mesh
}

public enum PeerToPeer: Hashable, Sendable {
    /// First frame on a link: who connects to whom, for which epoch, and what the link is for.
    case hello(epoch: UInt64, from: PeerID, to: PeerID, link: LinkKind)
    /// A shared-state receiver asks a source for `length` bytes of tensor `tensor` from `offset`,
    /// to come back as the data frame `tag` of the current operation.
    case stateRequest(tensor: UInt32, offset: UInt64, length: UInt32, tag: UInt32)
    /// The receiver needs nothing more from this source.
    case stateDone
}

/// "rank 3", "ranks 0-2, 5": ranks in ascending order, runs folded, at most `limit` entries.
public func rankList(_ ranks: [Int], limit: Int = 32) -> String {
    let sorted = Array(Set(ranks)).sorted()
    var runs: [String] = []
    var index = 0
    while index < sorted.count {
        var end = index
        while end + 1 < sorted.count && sorted[end + 1] == sorted[end] + 1 { end += 1 }
        runs.append(end == index ? "\(sorted[index])" : "\(sorted[index])-\(sorted[end])")
        index = end + 1
    }
    let shown = runs.prefix(limit).joined(separator: ", ") + (runs.count > limit ? ", ..." : "")
    return (sorted.count == 1 ? "rank " : "ranks ") + shown
}
