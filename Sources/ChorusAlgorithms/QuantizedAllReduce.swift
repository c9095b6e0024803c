import CChorusKernels

/// All-reduce (sum or average) of f32, f16 or bf16 data sent as 8- or 4-bit integers, with results
/// bit-identical at every member.
///
/// Each member quantizes its contribution once (with the caller's error feedback, if any) and the
/// ring all-gathers the quantized contributions; every member then reads all n of them back into
/// f32 and sums them in rank order, 0 first. The same bytes read the same way and added in the same
/// order give the same bits everywhere, and nothing is quantized twice: the error against the exact
/// sum is each contribution's own rounding (at most half a step of its block) plus f32 rounding.
/// A ring that adds partial sums hop by hop would have to quantize each partial again (PCCL does,
/// and truncates), which compounds the error along the ring.
///
/// Cost: each member sends and receives (n-1) quantized buffers, S·(n-1)·(bits/32 + headers) for an
/// f32 buffer of S bytes, against 2(n-1)/n·S for the f32 ring: 4x less for int8 at n = 2, equal at
/// n = 8 (int4 halves it again). Reducing the summation's share (quantized reduce-scatter, then a
/// quantized all-gather of the sums) is not built.
public struct QuantizedAllReduce: Sendable {
    public let count: Int
    public let dataType: DataType
    public let op: ReduceOp
    public let format: Quantization
    public let segmentBytes: Int

    public init(count: Int, dataType: DataType, op: ReduceOp, format: Quantization, segmentBytes: Int) {
        self.count = count
        self.dataType = dataType
        self.op = op
        self.format = format
        self.segmentBytes = segmentBytes
    }

    /// Why `dataType` and `op` cannot be quantized, or nil.
    public static func problem(dataType: DataType, op: ReduceOp) -> String? {
        guard [DataType.float32, .float16, .bfloat16].contains(dataType) else {
            return "a quantized all-reduce takes f32, f16 or bf16 data, not \(dataType)"
        }
        guard op == .sum || op == .avg else { return "a quantized all-reduce sums or averages, it cannot \(op)" }
        return nil
    }

    /// Scratch `run` needs for `worldSize` members: the quantized contributions of all, then the f32 sum.
    public func scratchBytes(worldSize: Int) -> Int { sumOffset(worldSize: worldSize) + count * 4 }

    /// Where the f32 sum starts: after the contributions, aligned (a buffer of 4-bit values can end on
    /// any byte).
    private func sumOffset(worldSize n: Int) -> Int { (n * encodedBytes + 63) & ~63 }

    /// Reduces `input` into `output` (which may be the same memory). `feedback`, when given, holds
    /// `count` f32 values: the error left over from the last call, added before quantizing and
    /// replaced by this call's. On a throw, `output` is unspecified and `feedback` already updated
    /// (the caller keeps a copy to put back).
    public func run<Links: CollectiveLinks>(links: Links, input: UnsafeRawPointer, output: UnsafeMutableRawPointer,
                                            feedback: UnsafeMutablePointer<Float>?, scratch: UnsafeMutableRawPointer) throws {
        let n = links.worldSize
        quantize(input, feedback: feedback, into: scratch + links.rank * encodedBytes)
        let gather = RingCollective(.allGather, count: n * encodedBytes, dataType: .uint8, segmentBytes: segmentBytes)
        try gather.run(links: links, input: scratch, output: scratch, scratch: nil)
        sum(worldSize: n, scratch: scratch, into: output)
    }

    /// What `run` gives a member alone: its own contribution as the others would read it.
    public func runAlone(input: UnsafeRawPointer, output: UnsafeMutableRawPointer,
                         feedback: UnsafeMutablePointer<Float>?, scratch: UnsafeMutableRawPointer) {
        quantize(input, feedback: feedback, into: scratch)
        sum(worldSize: 1, scratch: scratch, into: output)
    }

    private var encodedBytes: Int { format.encodedBytes(count: count) }

    private func quantize(_ input: UnsafeRawPointer, feedback: UnsafeMutablePointer<Float>?, into slot: UnsafeMutableRawPointer) {
        format.encode(input, dataType: dataType, count: count, feedback: feedback, into: slot)
    }

    /// Reads the contributions back in rank order, 0 first, summing in f32, and writes the result.
    private func sum(worldSize n: Int, scratch: UnsafeMutableRawPointer, into output: UnsafeMutableRawPointer) {
        let total = (scratch + sumOffset(worldSize: n)).assumingMemoryBound(to: Float.self)
        for rank in 0 ..< n {
            format.decode(scratch + rank * encodedBytes, count: count, into: total, accumulating: rank > 0)
        }
        let status = chorus_from_f32(dataType.kernelValue, output, total, count, UInt32(op == .avg ? n : 1))
        precondition(status == 0, "conversion kernel rejected \(dataType)")
    }
}
