/// What an algorithm needs from the transport: post sends and receives to peers by rank, and wait.
/// The public layer binds an implementation to one operation (epoch and op id) and one backend
/// (TCP today, RDMA later); algorithms never know which.
///
/// Contract:
/// - frames between two peers arrive in the order they were posted, and a receive must name the
///   same `tag` and byte count as the matching send, or the link fails;
/// - a posted buffer must stay valid until `wait` returns for it (or the links are torn down,
///   which the owner does before returning from a failed operation);
/// - `wait` blocks without spinning and throws when the link failed, the operation was aborted,
///   or its deadline passed.
public protocol CollectiveLinks {
    associatedtype Request

    /// This peer's position in the ring.
    var rank: Int { get }
    /// Peers in the current epoch.
    var worldSize: Int { get }

    /// Posts `bytes` to `peer`. Ring algorithms only address their neighbours.
    func send(_ bytes: UnsafeRawBufferPointer, to peer: Int, tag: UInt32) throws -> Request
    /// Posts a receive of exactly `buffer.count` bytes from `peer` into `buffer`.
    func receive(into buffer: UnsafeMutableRawBufferPointer, from peer: Int, tag: UInt32) throws -> Request
    /// Blocks until `request` finished.
    func wait(_ request: Request) throws
}
