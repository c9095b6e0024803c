/// How `count` elements split into `parts` contiguous chunks: the first `count % parts` chunks hold
/// one element more. Every peer computes the same split, so chunk boundaries need no negotiation.
public struct Partition: Sendable {
    public let count: Int
    public let parts: Int

    public init(count: Int, parts: Int) {
        precondition(parts > 0)
        self.count = count
        self.parts = parts
    }

    /// Elements in chunk `index`.
    public func length(of index: Int) -> Int {
        count / parts + (index < count % parts ? 1 : 0)
    }

    /// First element of chunk `index`.
    public func start(of index: Int) -> Int {
        index * (count / parts) + Swift.min(index, count % parts)
    }

    /// The largest chunk.
    public var maxLength: Int { count / parts + (count % parts > 0 ? 1 : 0) }
}
