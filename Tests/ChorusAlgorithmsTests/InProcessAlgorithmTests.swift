import ChorusAlgorithms
import ChorusTestSupport
import Synchronization
import Testing

/// Every algorithm over in-process links (`InProcessFabric`), without sockets or a master: world
/// sizes 2-16, frames delayed by a seeded random amount so links interleave differently on every
/// run, results compared bitwise with the sequential references; and a rank killed mid-run makes
/// every other rank's run throw instead of hang.
@Suite struct InProcessAlgorithmTests {
    static let worlds = Array(2 ... 16)
    static let dataTypes: [DataType] = [.float32, .bfloat16, .int64]

    /// Runs `body` on every rank of a fresh fabric; the returned per-rank outputs, and the errors.
    static func run(_ n: Int, seed: UInt64, _ body: @escaping @Sendable (InProcessLinks) throws -> [UInt8])
        -> (outputs: [[UInt8]], errors: [String]) {
        let fabric = InProcessFabric(worldSize: n, seed: seed)
        let outputs = Mutex<[[UInt8]]>(Array(repeating: [], count: n))
        let errors = InProcessFabric.run(fabric) { links in
            let output = try body(links)
            outputs.withLock { $0[links.rank] = output }
        }
        return (outputs.withLock { $0 }, errors.compactMap { $0 })
    }

    @Test(arguments: worlds)
    func ringAllReduceReduceScatterAndAllGatherMatchTheReference(worldSize n: Int) {
        for dataType in Self.dataTypes {
            for (op, count) in [(ReduceOp.sum, 1), (.max, 13 * n + 5), (.avg, 300)] {
                // NaNs with each rank's own payload under max: the result shows the fold order.
                let inputs = (0 ..< n).map { TestInputs.make(rank: $0, count: count, dataType: dataType, op: op, specials: op == .max) }
                let size = dataType.size
                // Small segments: many frames per step, so the pipelining is exercised too.
                let segment = 3 * size
                let allReduce = RingCollective(.allReduce, count: count, dataType: dataType, op: op, segmentBytes: segment)
                let reduced = Self.run(n, seed: UInt64(n * 1000 + count)) { links in
                    var output = [UInt8](repeating: 0, count: count * size)
                    var scratch = [UInt8](repeating: 0, count: max(1, allReduce.scratchBytes(worldSize: n)))
                    try inputs[links.rank].withUnsafeBytes { input in
                        try output.withUnsafeMutableBytes { out in
                            try scratch.withUnsafeMutableBytes { s in
                                try allReduce.run(links: links, input: input.baseAddress!, output: out.baseAddress!, scratch: s.baseAddress!)
                            }
                        }
                    }
                    return output
                }
                let expected = ReferenceReduction.ringAllReduce(inputs, count: count, dataType: dataType, op: op)
                #expect(reduced.errors.isEmpty && reduced.outputs.allSatisfy { $0 == expected }, "all-reduce n=\(n) \(dataType) \(op) \(count): \(reduced.errors)")

                // Reduce-scatter and all-gather over n blocks of `count` each.
                let blocks = (0 ..< n).map { TestInputs.make(rank: $0, count: count * n, dataType: dataType, op: op, specials: op == .max) }
                let scatter = RingCollective(.reduceScatter, count: count * n, dataType: dataType, op: op, segmentBytes: segment)
                let scattered = Self.run(n, seed: UInt64(n * 2000 + count)) { links in
                    var whole = [UInt8](repeating: 0, count: count * n * size)
                    var scratch = [UInt8](repeating: 0, count: max(1, scatter.scratchBytes(worldSize: n)))
                    try blocks[links.rank].withUnsafeBytes { input in
                        try whole.withUnsafeMutableBytes { out in
                            try scratch.withUnsafeMutableBytes { s in
                                try scatter.run(links: links, input: input.baseAddress!, output: out.baseAddress!, scratch: s.baseAddress!)
                            }
                        }
                    }
                    return Array(whole[links.rank * count * size ..< (links.rank + 1) * count * size])
                }
                let reference = ReferenceReduction.ringReduceScatter(blocks, count: count * n, dataType: dataType, op: op)
                for rank in 0 ..< n where scattered.errors.isEmpty {
                    #expect(scattered.outputs[rank] == Array(reference[rank * count * size ..< (rank + 1) * count * size]),
                            "reduce-scatter n=\(n) rank \(rank) \(dataType) \(op) \(count)")
                }
                #expect(scattered.errors.isEmpty, "\(scattered.errors)")

                let gather = RingCollective(.allGather, count: count * n, dataType: dataType, segmentBytes: segment)
                let gathered = Self.run(n, seed: UInt64(n * 3000 + count)) { links in
                    var output = [UInt8](repeating: 0, count: count * n * size)
                    let mine = inputs[links.rank]
                    output.replaceSubrange(links.rank * count * size ..< (links.rank + 1) * count * size, with: mine)
                    try output.withUnsafeMutableBytes { out in
                        try gather.run(links: links, input: out.baseAddress!, output: out.baseAddress!, scratch: nil)
                    }
                    return output
                }
                let concatenated = Array(inputs.joined())
                #expect(gathered.errors.isEmpty && gathered.outputs.allSatisfy { $0 == concatenated }, "all-gather n=\(n) \(dataType) \(count): \(gathered.errors)")
            }
        }
    }

    @Test(arguments: worlds)
    func recursiveDoublingAllReduceMatchesTheReference(worldSize n: Int) {
        for dataType in Self.dataTypes {
            for (op, count) in [(ReduceOp.sum, 1), (.min, 37), (.avg, 64)] {
                let inputs = (0 ..< n).map { TestInputs.make(rank: $0, count: count, dataType: dataType, op: op) }
                let algorithm = RecursiveDoublingAllReduce(count: count, dataType: dataType, op: op)
                let result = Self.run(n, seed: UInt64(n * 17 + count)) { links in
                    var output = [UInt8](repeating: 0, count: count * dataType.size)
                    var scratch = [UInt8](repeating: 0, count: max(1, algorithm.scratchBytes))
                    try inputs[links.rank].withUnsafeBytes { input in
                        try output.withUnsafeMutableBytes { out in
                            try scratch.withUnsafeMutableBytes { s in
                                try algorithm.run(links: links, input: input.baseAddress!, output: out.baseAddress!, scratch: s.baseAddress!)
                            }
                        }
                    }
                    return output
                }
                let expected = ReferenceReduction.recursiveDoublingAllReduce(inputs, count: count, dataType: dataType, op: op)
                #expect(result.errors.isEmpty && result.outputs.allSatisfy { $0 == expected }, "n=\(n) \(dataType) \(op) \(count): \(result.errors)")
            }
        }
    }

    @Test(arguments: worlds)
    func chainAndRecursiveDoublingScansMatchTheReference(worldSize n: Int) {
        let dataType = DataType.float32, count = 24, decayCount = 6
        let states = (0 ..< n).map { TestInputs.make(rank: $0, count: count, dataType: dataType, op: .sum) }
        let decays = (0 ..< n).map { TestInputs.make(rank: $0 + 7, count: decayCount, dataType: dataType, op: .prod) }
        for op in [ScanOperator.sum, .max, .affine] {
            for reverse in [false, true] {
                let decay = op == .affine ? decayCount : 0
                for blocks in [0, 1, 5] { // 0: recursive doubling
                    let result = Self.run(n, seed: UInt64(n * 31 + blocks)) { links in
                        var exclusive = [UInt8](repeating: 0, count: count * dataType.size)
                        var inclusive = exclusive
                        try states[links.rank].withUnsafeBytes { state in
                            try decays[links.rank].withUnsafeBytes { g in
                                try exclusive.withUnsafeMutableBytes { x in
                                    try inclusive.withUnsafeMutableBytes { i in
                                        if blocks == 0 {
                                            let scan = RecursiveDoublingScan(count: count, dataType: dataType, op: op, decayCount: decay, reverse: reverse)
                                            var scratch = [UInt8](repeating: 0, count: scan.scratchBytes)
                                            try scratch.withUnsafeMutableBytes { s in
                                                try scan.run(links: links, state: state.baseAddress!, decay: op == .affine ? g.baseAddress! : nil,
                                                             exclusive: x.baseAddress!, inclusive: i.baseAddress!, scratch: s.baseAddress!)
                                            }
                                        } else {
                                            let scan = ChainScan(count: count, dataType: dataType, op: op, decayCount: decay, reverse: reverse, blocks: blocks)
                                            try scan.run(links: links, state: state.baseAddress!, decay: op == .affine ? g.baseAddress! : nil,
                                                         exclusive: x.baseAddress!, inclusive: i.baseAddress!)
                                        }
                                    }
                                }
                            }
                        }
                        return exclusive + inclusive
                    }
                    let reference = blocks == 0
                        ? ReferenceScan.recursiveDoublingScan(states: states, decays: decays, count: count, decayCount: max(1, decay),
                                                              dataType: dataType, op: op, reverse: reverse)
                        : ReferenceScan.scan(states: states, decays: decays, count: count, decayCount: max(1, decay),
                                             dataType: dataType, op: op, reverse: reverse)
                    #expect(result.errors.isEmpty, "n=\(n) \(op) reverse \(reverse) blocks \(blocks): \(result.errors)")
                    for rank in 0 ..< n where result.errors.isEmpty {
                        #expect(result.outputs[rank] == reference[rank].exclusive + reference[rank].inclusive,
                                "n=\(n) \(op) reverse \(reverse) blocks \(blocks) rank \(rank)")
                    }
                }
            }
        }
    }

    @Test(arguments: worlds)
    func chainBroadcastDeliversTheRootsBytes(worldSize n: Int) {
        let bytes = 1000
        for root in Set([0, n / 2, n - 1]) {
            let payload = (0 ..< bytes).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ root) }
            let result = Self.run(n, seed: UInt64(n * 43 + root)) { links in
                var buffer = links.rank == root ? payload : [UInt8](repeating: 0xEE, count: bytes)
                try buffer.withUnsafeMutableBytes { b in
                    try ChainBroadcast(bytes: bytes, root: root, segmentBytes: 128).run(links: links, buffer: b.baseAddress!)
                }
                return buffer
            }
            #expect(result.errors.isEmpty && result.outputs.allSatisfy { $0 == payload }, "n=\(n) root \(root): \(result.errors)")
        }
    }

    /// A rank that dies part way: every survivor's run throws (its link failed), none hangs.
    @Test(arguments: [3, 8, 16])
    func aRankKilledMidRunMakesEveryOtherRankThrowNotHang(worldSize n: Int) {
        let count = 4096, dataType = DataType.float32
        for victim in [0, n - 1] {
            let fabric = InProcessFabric(worldSize: n, seed: UInt64(n + victim), maxDelay: .milliseconds(2))
            let ring = RingCollective(.allReduce, count: count, dataType: dataType, op: .sum, segmentBytes: 256)
            let errors = InProcessFabric.run(fabric) { links in
                if links.rank == victim {
                    fabric.kill(victim)
                    throw InProcessKilled()
                }
                let input = TestInputs.make(rank: links.rank, count: count, dataType: dataType, op: .sum)
                var output = [UInt8](repeating: 0, count: count * dataType.size)
                var scratch = [UInt8](repeating: 0, count: ring.scratchBytes(worldSize: n))
                try input.withUnsafeBytes { i in
                    try output.withUnsafeMutableBytes { o in
                        try scratch.withUnsafeMutableBytes { s in
                            try ring.run(links: links, input: i.baseAddress!, output: o.baseAddress!, scratch: s.baseAddress!)
                        }
                    }
                }
            }
            // The survivors' errors name a dead rank or a link it took down, never a timeout.
            for (rank, error) in errors.enumerated() where rank != victim {
                #expect(error != nil && !error!.contains("timed out"), "n=\(n) victim \(victim) rank \(rank): \(String(describing: error))")
            }
        }
    }

    struct InProcessKilled: Error {}
}
