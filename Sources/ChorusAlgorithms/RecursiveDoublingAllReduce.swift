/// Recursive-doubling all-reduce, for small, latency-bound messages: log2(n) exchange rounds over
/// the mesh instead of the ring's 2(n-1) steps.
///
/// Terms: p = the largest power of two <= n; the n-p "extra" ranks p..n-1 first send their buffer to
/// rank (r - p), which folds it in; then in round k (k = 1, 2, 4, ... < p) rank r exchanges its whole
/// partial result with rank r XOR k and both compute `lower op upper`, the lower rank's partial as the
/// left operand, so both hold the same bytes; finally each rank below n-p sends the result back to its
/// extra rank. Every peer ends with bit-identical output (one fixed order, the same on both sides of
/// each exchange), though the order differs from the ring's.
///
/// Cost: log2(p) rounds (+2 when n is not a power of two), each sending the whole buffer: best below
/// the ring/tree crossover (`auto` picks it for small messages).
public struct RecursiveDoublingAllReduce: Sendable {
    public let count: Int
    public let dataType: DataType
    public let op: ReduceOp

    public init(count: Int, dataType: DataType, op: ReduceOp) {
        self.count = count
        self.dataType = dataType
        self.op = op
    }

    /// Scratch bytes `run` needs: one buffer to receive a partner's partial.
    public var scratchBytes: Int { count * dataType.size }

    public func run<Links: CollectiveLinks>(links: Links, input: UnsafeRawPointer, output: UnsafeMutableRawPointer,
                                            scratch: UnsafeMutableRawPointer) throws {
        let n = links.worldSize, r = links.rank
        let bytes = count * dataType.size
        var p = 1
        while p * 2 <= n { p *= 2 }
        let extras = n - p
        let received = UnsafeMutableRawBufferPointer(start: scratch, count: bytes)
        var tag: UInt32 = 0
        func exchange(with peer: Int, send: UnsafeRawPointer) throws {
            let receive = try links.receive(into: received, from: peer, tag: tag)
            let sent = try links.send(UnsafeRawBufferPointer(start: send, count: bytes), to: peer, tag: tag)
            try links.wait(receive)
            try links.wait(sent)
            tag &+= 1
        }
        func fold(lowerIsMine: Bool, mine: UnsafeRawPointer) {
            if lowerIsMine {
                Reduction.combine(op, dataType, out: output, mine, received.baseAddress!, count: count)
            } else {
                Reduction.combine(op, dataType, out: output, received.baseAddress!, mine, count: count)
            }
        }

        if r >= p {
            // An extra rank: hand the input to its partner below, then wait for the result.
            let sent = try links.send(UnsafeRawBufferPointer(start: input, count: bytes), to: r - p, tag: 0)
            try links.wait(sent)
            let result = try links.receive(into: UnsafeMutableRawBufferPointer(start: output, count: bytes), from: r - p, tag: 1)
            try links.wait(result)
            return
        }
        var mine = input
        if r < extras {
            let incoming = try links.receive(into: received, from: r + p, tag: 0)
            try links.wait(incoming)
            fold(lowerIsMine: true, mine: input)
            mine = UnsafeRawPointer(output)
        }
        tag = 1
        var distance = 1
        while distance < p {
            let partner = r ^ distance
            try exchange(with: partner, send: mine)
            fold(lowerIsMine: r < partner, mine: mine)
            mine = UnsafeRawPointer(output)
            distance *= 2
        }
        if op == .avg { Reduction.divide(dataType, output, count: count, by: n) }
        if r < extras {
            let sent = try links.send(UnsafeRawBufferPointer(start: output, count: bytes), to: r + p, tag: 1)
            try links.wait(sent)
        }
    }
}
