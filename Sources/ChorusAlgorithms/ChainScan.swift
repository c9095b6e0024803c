import CChorusKernels

/// ZeCO-style All-Scan as a pipelined chain (allscan-spec.md).
///
/// Terms (n ranks; position q = r forward, n-1-r reverse; "previous" and "next" along that order):
/// - state S_q: this rank's `count` elements; decay g_q (affine only): `decayCount` elements, a
///   leading prefix of the state's shape, so element i uses g[i / (count / decayCount)];
/// - exclusive X_q: the fold of the states before q (X_0 = the operator's identity); inclusive
///   I_q = X_q op S_q, with `X op S = g*X + S` for affine; I_0 = S_0 exactly;
/// - block: the state split into `blocks` contiguous pieces that travel down the chain on their own,
///   so rank q+1 works on block k while block k+1 is in flight.
///
/// Each rank receives X_q from the previous rank (over the mesh), computes I_q, and sends it to the
/// next: every rank sends exactly one state, whatever n. Time ≈ (n + K - 2)(α + M/(K·B)); the
/// result is the sequential left fold, bit-identical for every K.
public struct ChainScan: Sendable {
    public let count: Int
    public let dataType: DataType
    public let op: ScanOperator
    public let decayCount: Int
    public let reverse: Bool
    public let blocks: Int

    public init(count: Int, dataType: DataType, op: ScanOperator, decayCount: Int, reverse: Bool, blocks: Int) {
        self.count = count
        self.dataType = dataType
        self.op = op
        self.decayCount = decayCount
        self.reverse = reverse
        self.blocks = blocks
    }

    /// Scratch bytes `run` needs when the caller wants neither the exclusive nor the inclusive result
    /// kept (one state for each it does not keep).
    public var stateBytes: Int { count * dataType.size }

    /// K from the cost model: sqrt((n-2)·M/(α·B)), α and B measured on loopback (≈50 µs, ≈2 GB/s),
    /// clamped to 1...64 and to the element count.
    public static func defaultBlocks(bytes: Int, worldSize n: Int) -> Int {
        guard n > 2, bytes > 0 else { return 1 }
        let alphaSeconds = 50e-6, bytesPerSecond = 2e9
        let k = (Double(n - 2) * Double(bytes) / (alphaSeconds * bytesPerSecond)).squareRoot().rounded()
        return Swift.max(1, Swift.min(64, Int(k)))
    }

    /// Runs the scan. `exclusive` and `inclusive` receive X_q and I_q (`count` elements each); both
    /// are required buffers (pass scratch for one you do not need).
    public func run<Links: CollectiveLinks>(links: Links, state: UnsafeRawPointer, decay: UnsafeRawPointer?,
                                            exclusive: UnsafeMutableRawPointer, inclusive: UnsafeMutableRawPointer) throws {
        let n = links.worldSize, r = links.rank
        let q = reverse ? n - 1 - r : r
        let previous = reverse ? r + 1 : r - 1, next = reverse ? r - 1 : r + 1
        let size = dataType.size
        let stride = op == .affine ? count / Swift.max(1, decayCount) : 1
        let partition = Partition(count: count, parts: Swift.max(1, Swift.min(blocks, Swift.max(count, 1))))
        let pieces = (0 ..< partition.parts).map { partition.start(of: $0) ..< partition.start(of: $0) + partition.length(of: $0) }
            .filter { !$0.isEmpty }
        func bytes(_ base: UnsafeRawPointer, _ range: Range<Int>) -> UnsafeRawBufferPointer {
            UnsafeRawBufferPointer(start: base + range.lowerBound * size, count: range.count * size)
        }
        let receives = q == 0 ? [] : try pieces.enumerated().map { tag, piece in
            try links.receive(into: UnsafeMutableRawBufferPointer(start: exclusive + piece.lowerBound * size, count: piece.count * size),
                              from: previous, tag: UInt32(truncatingIfNeeded: tag))
        }
        if q == 0 { op.fillIdentity(exclusive, count: count, dataType: dataType) }
        var sends: [Links.Request] = []
        for (tag, piece) in pieces.enumerated() {
            let x = exclusive + piece.lowerBound * size, s = state + piece.lowerBound * size
            let out = inclusive + piece.lowerBound * size
            if q == 0 {
                out.copyMemory(from: s, byteCount: piece.count * size)
            } else {
                try links.wait(receives[tag])
                if let reduceOp = op.reduceOp {
                    Reduction.combine(reduceOp, dataType, out: out, x, s, count: piece.count)
                } else {
                    // The decay index of element i is i / stride; offset the decay so the kernel can count from 0.
                    let first = piece.lowerBound / stride, within = piece.lowerBound % stride
                    affine(out: out, decay: decay!, firstDecay: first, skip: within, x: x, s: s, count: piece.count, stride: stride)
                }
            }
            if q < n - 1 { sends.append(try links.send(bytes(inclusive, piece), to: next, tag: UInt32(truncatingIfNeeded: tag))) }
        }
        for request in sends { try links.wait(request) }
    }

    /// out[i] = g[(i + skip) / stride + firstDecay] * x[i] + s[i] for a block that may start inside a
    /// decay group: the partial leading group first, then every whole group in one kernel call.
    private func affine(out: UnsafeMutableRawPointer, decay: UnsafeRawPointer, firstDecay: Int, skip: Int,
                        x: UnsafeRawPointer, s: UnsafeRawPointer, count: Int, stride: Int) {
        let size = dataType.size
        func step(_ from: Int, _ length: Int, _ group: Int) {
            guard length > 0 else { return }
            let status = chorus_affine_step(dataType.kernelValue, out + from * size, decay + group * size,
                                            x + from * size, s + from * size, length, stride)
            precondition(status == 0, "affine scan needs a float dtype")
        }
        let lead = skip == 0 ? 0 : Swift.min(count, stride - skip)
        step(0, lead, firstDecay)
        step(lead, count - lead, firstDecay + (skip == 0 ? 0 : 1))
    }
}
