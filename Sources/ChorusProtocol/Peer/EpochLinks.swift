/// The connections of one epoch. Ring algorithms use the lanes (frame `tag` travels on lane
/// `tag % lanes`, so consecutive segments stripe over parallel streams while each lane keeps its
/// order); other algorithms use the mesh, one connection per pair of members, both ways.
/// A connection as the peer's state machine knows it: the transport's number for it
/// (`ConnectionID.rawValue` in `ChorusTransport`, which this layer does not import).
public typealias ConnectionNumber = UInt64

public struct EpochLinks: Hashable, Sendable {
    public let left: [ConnectionNumber]
    public let right: [ConnectionNumber]
    /// By rank.
    public let mesh: [Int: ConnectionNumber]

    public init(left: [ConnectionNumber], right: [ConnectionNumber], mesh: [Int: ConnectionNumber]) {
        self.left = left
        self.right = right
        self.mesh = mesh
    }

    public var all: [ConnectionNumber] { left + right + Array(mesh.values) }
    public func contains(_ connection: ConnectionNumber) -> Bool { all.contains(connection) }

    /// The member at the other end of `connection`, for a member at `rank` of `members`.
    public func member(on connection: ConnectionNumber, rank: Int, of members: [Member]) -> PeerID? {
        let n = members.count
        if left.contains(connection) { return members[(rank + n - 1) % n].id }
        if right.contains(connection) { return members[(rank + 1) % n].id }
        return mesh.first { $0.value == connection }.map { members[$0.key].id }
    }
}
