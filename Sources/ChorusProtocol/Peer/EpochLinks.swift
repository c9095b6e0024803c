/// The connections of one epoch. Ring algorithms use the lanes (frame `tag` travels on lane
/// `tag % lanes`, so consecutive segments stripe over parallel streams while each lane keeps its
/// order); other algorithms use the mesh, one connection per pair of members, both ways.
public struct EpochLinks<Connection: Hashable & Sendable>: Hashable, Sendable {
    public let left: [Connection]
    public let right: [Connection]
    /// By rank.
    public let mesh: [Int: Connection]

    public init(left: [Connection], right: [Connection], mesh: [Int: Connection]) {
        self.left = left
        self.right = right
        self.mesh = mesh
    }

    public var all: [Connection] { left + right + Array(mesh.values) }
    public func contains(_ connection: Connection) -> Bool { all.contains(connection) }

    /// The member at the other end of `connection`, for a member at `rank` of `members`.
    public func member(on connection: Connection, rank: Int, of members: [Member]) -> PeerID? {
        let n = members.count
        if left.contains(connection) { return members[(rank + n - 1) % n].id }
        if right.contains(connection) { return members[(rank + 1) % n].id }
        return mesh.first { $0.value == connection }.map { members[$0.key].id }
    }
}
