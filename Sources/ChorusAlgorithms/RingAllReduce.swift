/// Ring all-reduce: a reduce-scatter followed by an all-gather around the ring, pipelined in segments.
///
/// Terms (n peers, this peer's rank r, neighbours r-1 "left" and r+1 "right", indices mod n):
/// - chunk: the buffer split into n contiguous parts (`Partition`); chunk c's reduction starts at
///   rank c and travels right, so rank c-1 ends up owning the finished chunk c;
/// - segment: a chunk split into pieces of at most `segmentBytes`, each sent as one frame; a segment
///   received in step s is reduced and forwarded in step s+1 while later segments are in flight,
///   so reducing overlaps sending;
/// - reduce-scatter step s (0..n-2): send chunk r-s, receive chunk r-s-1 into scratch and reduce it
///   (`out = received op input`), so chunk c is folded in the order c, c+1, ..., c-1;
/// - all-gather step s (0..n-2): send chunk r+1-s, receive chunk r-s straight into the output.
///
/// Cost: 2(n-1) steps; each peer sends and receives 2(n-1)/n of the buffer; the master is not involved.
/// Every element of the output is produced by exactly one peer and copied to the others, so all peers
/// hold identical bytes. Frames on a link are posted step by step, segment by segment, on both ends,
/// and tags count frames in that order.
public struct RingAllReduce {
    public let count: Int
    public let dataType: DataType
    public let op: ReduceOp
    public let segmentBytes: Int

    public init(count: Int, dataType: DataType, op: ReduceOp, segmentBytes: Int) {
        self.count = count
        self.dataType = dataType
        self.op = op
        self.segmentBytes = segmentBytes
    }

    /// Bytes of scratch `run` needs for `worldSize` peers: two chunks, one being reduced while the
    /// next step's receives land in the other.
    public func scratchBytes(worldSize: Int) -> Int {
        2 * Partition(count: count, parts: worldSize).maxLength * dataType.size
    }

    /// Runs the all-reduce. `input` and `output` are `count` elements each and may be the same memory.
    /// On a throw, the output is unspecified, the input is untouched unless it is the output, and
    /// the caller must tear the links down before reusing any buffer.
    public func run<Links: CollectiveLinks>(links: Links, input: UnsafeRawPointer, output: UnsafeMutableRawPointer,
                                            scratch: UnsafeMutableRawPointer) throws {
        let n = links.worldSize, r = links.rank
        precondition(n >= 2, "a world of one needs no ring")
        let chunks = Partition(count: count, parts: n)
        let elementSize = dataType.size
        let segmentElements = Swift.max(1, segmentBytes / elementSize)
        let left = (r + n - 1) % n, right = (r + 1) % n
        let stepsPerPhase = n - 1
        let chunkScratch = chunks.maxLength * elementSize
        func chunk(_ c: Int) -> Int { ((c % n) + n) % n }
        func segments(of c: Int) -> [Range<Int>] {
            let start = chunks.start(of: c), length = chunks.length(of: c)
            return stride(from: 0, to: length, by: segmentElements).map {
                (start + $0) ..< (start + Swift.min(length, $0 + segmentElements))
            }
        }
        func bytes(_ base: UnsafeRawPointer, _ elements: Range<Int>) -> UnsafeRawBufferPointer {
            UnsafeRawBufferPointer(start: base + elements.lowerBound * elementSize, count: elements.count * elementSize)
        }
        func mutableBytes(_ base: UnsafeMutableRawPointer, _ elements: Range<Int>) -> UnsafeMutableRawBufferPointer {
            UnsafeMutableRawBufferPointer(start: base + elements.lowerBound * elementSize, count: elements.count * elementSize)
        }
        func scatterChunk(_ s: Int) -> Int { chunk(r - s - 1) }
        func gatherChunk(_ s: Int) -> Int { chunk(r - s) }
        func scratchSlot(_ s: Int) -> UnsafeMutableRawPointer { scratch + (s % 2) * chunkScratch }

        var sendTag: UInt32 = 0, receiveTag: UInt32 = 0
        var sends: [Links.Request] = []
        func post(_ elements: Range<Int>, from base: UnsafeRawPointer) throws {
            sends.append(try links.send(bytes(base, elements), to: right, tag: sendTag))
            sendTag &+= 1
        }
        func expect(_ buffer: UnsafeMutableRawBufferPointer) throws -> Links.Request {
            defer { receiveTag &+= 1 }
            return try links.receive(into: buffer, from: left, tag: receiveTag)
        }

        // Receives are posted in the order the left neighbour sends: scatter steps, then gather steps.
        var scatterReceives: [[Links.Request]] = Array(repeating: [], count: stepsPerPhase)
        var gatherReceives: [[Links.Request]] = []
        func postScatterReceives(step s: Int) throws {
            let c = scatterChunk(s), chunkStart = chunks.start(of: c)
            scatterReceives[s] = try segments(of: c).map { seg in
                try expect(UnsafeMutableRawBufferPointer(start: scratchSlot(s) + (seg.lowerBound - chunkStart) * elementSize,
                                                         count: seg.count * elementSize))
            }
            if s == stepsPerPhase - 1 {
                gatherReceives = try (0 ..< stepsPerPhase).map { g in
                    try segments(of: gatherChunk(g)).map { try expect(mutableBytes(output, $0)) }
                }
            }
        }

        try postScatterReceives(step: 0)
        if stepsPerPhase > 1 { try postScatterReceives(step: 1) }
        for seg in segments(of: chunk(r)) { try post(seg, from: input) }

        for s in 0 ..< stepsPerPhase {
            let c = scatterChunk(s), chunkStart = chunks.start(of: c)
            for (j, seg) in segments(of: c).enumerated() {
                try links.wait(scatterReceives[s][j])
                let target = output + seg.lowerBound * elementSize
                Reduction.combine(op, dataType, out: target,
                                  scratchSlot(s) + (seg.lowerBound - chunkStart) * elementSize,
                                  input + seg.lowerBound * elementSize, count: seg.count)
                if s == stepsPerPhase - 1 && op == .avg {
                    Reduction.divide(dataType, target, count: seg.count, by: n)
                }
                try post(seg, from: output) // next scatter step, or gather step 0 for the owned chunk
            }
            if s + 2 < stepsPerPhase { try postScatterReceives(step: s + 2) }
        }

        for s in 0 ..< stepsPerPhase {
            for (j, seg) in segments(of: gatherChunk(s)).enumerated() {
                try links.wait(gatherReceives[s][j])
                if s + 1 < stepsPerPhase { try post(seg, from: output) }
            }
        }
        for request in sends { try links.wait(request) }
    }
}
