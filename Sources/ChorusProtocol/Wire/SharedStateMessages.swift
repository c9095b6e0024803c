/// What peers tell the master about their shared state, and the transfer plan it answers with.

/// How a peer takes part in a shared-state synchronization.
public enum SyncStrategy: UInt8, Hashable, Sendable {
    /// Votes with its state and receives the elected one if it differs (the default).
    case elect = 0
    /// Does not vote; always ends up with the elected state.
    case receiveOnly = 1
    /// Votes and may serve, but must already hold the elected state (else the sync fails).
    case sendOnly = 2
}

/// One tensor as a peer holds it: its shape and a hash of its bytes.
public struct TensorDigest: Hashable, Sendable {
    public var name: String
    public var dataType: UInt8
    public var count: UInt64
    /// Excluded from the election and never transferred (e.g. per-peer statistics).
    public var allowedToDiffer: Bool
    /// 64-bit xxHash3 of the tensor's bytes (0 when `allowedToDiffer`).
    public var hash: UInt64

    public init(name: String, dataType: UInt8, count: UInt64, allowedToDiffer: Bool, hash: UInt64) {
        self.name = name
        self.dataType = dataType
        self.count = count
        self.allowedToDiffer = allowedToDiffer
        self.hash = hash
    }

    /// True when both describe the same tensor slot (hashes aside).
    public func sameShape(as other: TensorDigest) -> Bool {
        name == other.name && dataType == other.dataType && count == other.count && allowedToDiffer == other.allowedToDiffer
    }
}

/// A peer's whole shared state as it enters a synchronization.
public struct StateDigest: Hashable, Sendable {
    public var revision: UInt64
    public var strategy: SyncStrategy
    public var tensors: [TensorDigest]

    public init(revision: UInt64, strategy: SyncStrategy, tensors: [TensorDigest]) {
        self.revision = revision
        self.strategy = strategy
        self.tensors = tensors
    }
}

/// The master's answer when some peer is outdated: who serves, who receives what, and the hashes
/// receivers must end up with.
public struct SyncPlan: Hashable, Sendable {
    public struct Receiver: Hashable, Sendable {
        public var id: PeerID
        /// Indices of the tensors this peer must receive (possibly none: only its revision lags).
        public var tensors: [UInt32]
        public init(id: PeerID, tensors: [UInt32]) {
            self.id = id
            self.tensors = tensors
        }
    }

    /// The elected revision.
    public var revision: UInt64
    /// The elected hash of every tensor (0 for tensors allowed to differ).
    public var hashes: [UInt64]
    /// Members holding the elected state, in ring order.
    public var sources: [PeerID]
    public var receivers: [Receiver]

    public init(revision: UInt64, hashes: [UInt64], sources: [PeerID], receivers: [Receiver]) {
        self.revision = revision
        self.hashes = hashes
        self.sources = sources
        self.receivers = receivers
    }
}
