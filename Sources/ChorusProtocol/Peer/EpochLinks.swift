/// The connections of one epoch. Ring algorithms use the lanes (frame `tag` travels on lane
/// `tag % lanes`, so consecutive segments stripe over parallel streams while each lane keeps its
/// order); other algorithms use the mesh, one connection per pair of members, both ways.
///
/// The mesh is sparse: an epoch connects a member only to the members whose rank differs from its
/// own by a power of two (`meshPartners`), at most 2·log2(n) of them. Those are all the partners
/// of every algorithm that addresses members by rank (recursive doubling exchanges with r XOR 2^k
/// and its extra ranks with r ± p; the recursive-doubling scan with the members 2^k positions away;
/// the chain scan uses the ring lanes both ways). A link outside the pattern is dialed when an operation first needs one, by the
/// only side that needs it (a shared-state transfer's receiver, pulling from a source).
/// A connection as the peer's state machine knows it: the transport's number for it
/// (`ConnectionID.rawValue` in `ChorusTransport`, which this layer does not import).
public typealias ConnectionNumber = UInt64

public struct EpochLinks: Hashable, Sendable {
    public let left: [ConnectionNumber]
    public let right: [ConnectionNumber]
    /// By rank; grows when a member dials a link outside the pattern.
    public internal(set) var mesh: [Int: ConnectionNumber]

    public init(left: [ConnectionNumber], right: [ConnectionNumber], mesh: [Int: ConnectionNumber]) {
        self.left = left
        self.right = right
        self.mesh = mesh
    }

    /// The ranks a member at `rank` of `count` links to when the epoch forms: those a power of two away.
    public static func meshPartners(of rank: Int, count: Int) -> [Int] {
        var partners: [Int] = [], distance = 1
        while distance < count {
            if rank - distance >= 0 { partners.append(rank - distance) }
            if rank + distance < count { partners.append(rank + distance) }
            distance *= 2
        }
        return partners.sorted()
    }

    public var all: [ConnectionNumber] { left + right + Array(mesh.values) }

    public func contains(_ connection: ConnectionNumber) -> Bool {
        left.contains(connection) || right.contains(connection) || mesh.values.contains(connection)
    }

    /// The rank at the other end of a mesh link.
    public func rank(onMesh connection: ConnectionNumber) -> Int? {
        mesh.first { $0.value == connection }?.key
    }

    /// The member at the other end of `connection`, for a member at `rank` of `members`.
    public func member(on connection: ConnectionNumber, rank: Int, of members: [Member]) -> PeerID? {
        let n = members.count
        if left.contains(connection) { return members[(rank + n - 1) % n].id }
        if right.contains(connection) { return members[(rank + 1) % n].id }
        return self.rank(onMesh: connection).map { members[$0].id }
    }
}
