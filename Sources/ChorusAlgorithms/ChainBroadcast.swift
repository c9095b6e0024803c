/// Broadcast down the ring, pipelined: the root sends segments to its right neighbour, every other
/// rank receives each segment straight into its buffer and forwards it right, and the rank left of
/// the root only receives.
///
/// Cost: n-1 hops plus one per extra segment, (n-1 + k - 1) segment times for k segments; each link
/// carries the buffer once, so large broadcasts run at link speed whatever n.
public struct ChainBroadcast: Sendable {
    public let bytes: Int
    public let root: Int
    public let segmentBytes: Int

    public init(bytes: Int, root: Int, segmentBytes: Int) {
        self.bytes = bytes
        self.root = root
        self.segmentBytes = segmentBytes
    }

    public func run<Links: CollectiveLinks>(links: Links, buffer: UnsafeMutableRawPointer) throws {
        let n = links.worldSize, r = links.rank
        precondition(n >= 2 && (0 ..< n).contains(root))
        let position = (r - root + n) % n // 0 at the root
        let segments = stride(from: 0, to: bytes, by: Swift.max(1, segmentBytes)).map { $0 ..< Swift.min(bytes, $0 + segmentBytes) }
        let receives = position == 0 ? [] : try segments.enumerated().map { tag, seg in
            try links.receive(into: UnsafeMutableRawBufferPointer(start: buffer + seg.lowerBound, count: seg.count),
                              from: (r + n - 1) % n, tag: UInt32(truncatingIfNeeded: tag))
        }
        var sends: [Links.Request] = []
        for (tag, seg) in segments.enumerated() {
            if position > 0 { try links.wait(receives[tag]) }
            if position < n - 1 {
                sends.append(try links.send(UnsafeRawBufferPointer(start: buffer + seg.lowerBound, count: seg.count),
                                            to: (r + 1) % n, tag: UInt32(truncatingIfNeeded: tag)))
            }
        }
        for request in sends { try links.wait(request) }
    }
}
