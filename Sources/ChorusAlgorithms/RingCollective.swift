/// Ring reduce-scatter and all-gather, and the all-reduce that chains them, pipelined in segments.
///
/// Terms (n peers, this peer's rank r, neighbours r-1 "left" and r+1 "right", indices mod n):
/// - chunk: the buffer split into n contiguous parts (`Partition`); chunk c's reduction starts at
///   rank c and travels right, so rank c-1 ends up owning the finished chunk c. `layout` says where
///   chunk c lives in memory: the all-reduce keeps chunk c in block c; the standalone reduce-scatter
///   and all-gather shift by one so that rank r owns block r, as MPI's `_block` variants do;
/// - segment: a chunk split into pieces of at most `segmentBytes`, each sent as one frame; a segment
///   received in step s is reduced and forwarded in step s+1 while later segments are in flight,
///   so reducing overlaps sending;
/// - reduce-scatter step s (0..n-2): send chunk r-s, receive chunk r-s-1 into scratch and reduce it
///   (`out = received op input`), so chunk c is folded in the order c, c+1, ..., c-1;
/// - all-gather step s (0..n-2): send chunk r+1-s, receive chunk r-s straight into the output.
///
/// Cost per phase: n-1 steps, each peer sends and receives (n-1)/n of the buffer; the all-reduce
/// is both phases, 2(n-1) steps. Every element of an all-reduce output is produced by exactly one peer
/// and copied to the others, so all peers hold identical bytes. Frames on a link are posted step by
/// step, segment by segment, on both ends, and tags count frames in that order.
public struct RingCollective: Sendable {
    public enum Phases: Sendable {
        case reduceScatter, allGather, allReduce
    }

    public let phases: Phases
    /// Elements in the whole buffer (all n blocks).
    public let count: Int
    public let dataType: DataType
    public let op: ReduceOp
    public let segmentBytes: Int

    public init(_ phases: Phases, count: Int, dataType: DataType, op: ReduceOp = .sum, segmentBytes: Int) {
        self.phases = phases
        self.count = count
        self.dataType = dataType
        self.op = op
        self.segmentBytes = segmentBytes
    }

    /// Bytes of scratch `run` needs for `worldSize` peers: two chunks, one being reduced while the
    /// next step's receives land in the other.
    public func scratchBytes(worldSize: Int) -> Int {
        phases == .allGather ? 0 : 2 * Partition(count: count, parts: worldSize).maxLength * dataType.size
    }

    /// Runs the collective over `count` elements of `input` and `output`, which may be the same memory.
    /// - reduce-scatter: the reduced block `rank` lands in block `rank` of `output` (the other blocks
    ///   of `output` are used as working space);
    /// - all-gather: block `rank` of `output` must already hold this peer's contribution;
    /// - all-reduce: the whole reduction lands in `output`.
    /// On a throw, the output is unspecified, the input is untouched unless it is the output, and the
    /// caller must tear the links down before reusing any buffer.
    public func run<Links: CollectiveLinks>(links: Links, input: UnsafeRawPointer, output: UnsafeMutableRawPointer,
                                            scratch: UnsafeMutableRawPointer?) throws {
        let n = links.worldSize, r = links.rank
        precondition(n >= 2, "a world of one needs no ring")
        let chunks = Partition(count: count, parts: n)
        let elementSize = dataType.size
        let segmentElements = Swift.max(1, segmentBytes / elementSize)
        let left = (r + n - 1) % n, right = (r + 1) % n
        let steps = n - 1
        let chunkScratch = chunks.maxLength * elementSize
        let blockShift = phases == .allReduce ? 0 : n - 1
        func chunk(_ c: Int) -> Int { ((c % n) + n) % n }
        func segments(of c: Int) -> [Range<Int>] {
            let block = (c + blockShift) % n
            let start = chunks.start(of: block), length = chunks.length(of: block)
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
        func scratchSlot(_ s: Int) -> UnsafeMutableRawPointer { scratch! + (s % 2) * chunkScratch }

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
        let scatters = phases != .allGather, gathers = phases != .reduceScatter
        var scatterReceives: [[Links.Request]] = Array(repeating: [], count: steps)
        var gatherReceives: [[Links.Request]] = []
        func postGatherReceives() throws {
            gatherReceives = try (0 ..< steps).map { g in
                try segments(of: gatherChunk(g)).map { try expect(mutableBytes(output, $0)) }
            }
        }
        func postScatterReceives(step s: Int) throws {
            let segs = segments(of: scatterChunk(s)), chunkStart = segs.first?.lowerBound ?? 0
            scatterReceives[s] = try segs.map { seg in
                try expect(UnsafeMutableRawBufferPointer(start: scratchSlot(s) + (seg.lowerBound - chunkStart) * elementSize,
                                                         count: seg.count * elementSize))
            }
            if s == steps - 1 && gathers { try postGatherReceives() }
        }

        if scatters {
            try postScatterReceives(step: 0)
            if steps > 1 { try postScatterReceives(step: 1) }
            for seg in segments(of: chunk(r)) { try post(seg, from: input) }
            for s in 0 ..< steps {
                let segs = segments(of: scatterChunk(s)), chunkStart = segs.first?.lowerBound ?? 0
                for (j, seg) in segs.enumerated() {
                    try links.wait(scatterReceives[s][j])
                    let target = output + seg.lowerBound * elementSize
                    Reduction.combine(op, dataType, out: target,
                                      scratchSlot(s) + (seg.lowerBound - chunkStart) * elementSize,
                                      input + seg.lowerBound * elementSize, count: seg.count)
                    if s == steps - 1 {
                        if op == .avg { Reduction.divide(dataType, target, count: seg.count, by: n) }
                        if gathers { try post(seg, from: output) } // gather step 0 sends the owned chunk
                    } else {
                        try post(seg, from: output)
                    }
                }
                if s + 2 < steps { try postScatterReceives(step: s + 2) }
            }
        } else {
            try postGatherReceives()
            for seg in segments(of: chunk(r + 1)) { try post(seg, from: output) }
        }

        if gathers {
            for s in 0 ..< steps {
                for (j, seg) in segments(of: gatherChunk(s)).enumerated() {
                    try links.wait(gatherReceives[s][j])
                    if s + 1 < steps { try post(seg, from: output) }
                }
            }
        }
        for request in sends { try links.wait(request) }
    }
}
