import Chorus
import ChorusTestSupport
import Synchronization
import Testing

/// Recursive-doubling all-reduce, reduce-scatter, all-gather, broadcast and barrier over real
/// sockets, bitwise against sequential references, for world sizes 1 to 6.
@Suite(.serialized) struct CollectivesTests {
    static let counts = [0, 1, 3, 13, 257]

    @Test(arguments: 1 ... 6)
    func everyCollectiveMatchesItsReference(worldSize n: Int) throws {
        let problems = Mutex<[String]>([])
        let checked = Atomic<Int>(0)
        @Sendable func check(_ ok: Bool, _ what: @autoclosure () -> String) {
            checked.add(1, ordering: .relaxed)
            if !ok { problems.withLock { $0.append(what()) } }
        }
        try GroupHarness.run(worldSize: n, configuration: GroupHarness.testConfiguration(segmentBytes: 64)) { c in
            let r = c.rank
            for dataType in DataType.allCases {
                let size = dataType.size
                for op in ReduceOp.allCases {
                    for count in Self.counts {
                        let inputs = (0 ..< n).map { TestInputs.make(rank: $0, count: count, dataType: dataType, op: op) }
                        // Recursive doubling, pinned.
                        var reduced = inputs[r]
                        try reduced.withUnsafeMutableBytes {
                            try c.allReduce(inPlace: $0, count: count, dataType: dataType, op: op, algorithm: .recursiveDoubling)
                        }
                        check(reduced == ReferenceReduction.recursiveDoublingAllReduce(inputs, count: count, dataType: dataType, op: op),
                              "rd n=\(n) \(dataType) \(op) count=\(count)")
                        // Reduce-scatter of n blocks of `count`.
                        let blocks = (0 ..< n).map { TestInputs.make(rank: $0, count: count * n, dataType: dataType, op: op) }
                        var block = [UInt8](repeating: 0xEE, count: count * size)
                        try blocks[r].withUnsafeBytes { send in
                            try block.withUnsafeMutableBytes { receive in
                                try c.reduceScatter(send: send, receive: receive, count: count, dataType: dataType, op: op)
                            }
                        }
                        let all = ReferenceReduction.ringReduceScatter(blocks, count: count * n, dataType: dataType, op: op)
                        check(block == Array(all[r * count * size ..< (r + 1) * count * size]),
                              "reduce-scatter n=\(n) \(dataType) \(op) count=\(count)")
                    }
                }
                // All-gather and broadcast move bytes: one op is enough per dtype.
                for count in Self.counts {
                    let mine = TestInputs.make(rank: r, count: count, dataType: dataType, op: .sum)
                    var gathered = [UInt8](repeating: 0xEE, count: count * size * n)
                    try mine.withUnsafeBytes { send in
                        try gathered.withUnsafeMutableBytes { receive in
                            try c.allGather(send: send, receive: receive, count: count, dataType: dataType)
                        }
                    }
                    check(gathered == (0 ..< n).flatMap { TestInputs.make(rank: $0, count: count, dataType: dataType, op: .sum) },
                          "all-gather n=\(n) \(dataType) count=\(count)")
                    for root in Set([0, n - 1, n / 2]).sorted() {
                        var buffer = r == root ? mine : [UInt8](repeating: UInt8(r), count: mine.count)
                        try buffer.withUnsafeMutableBytes { try c.broadcast($0, root: root) }
                        check(buffer == TestInputs.make(rank: root, count: count, dataType: dataType, op: .sum),
                              "broadcast n=\(n) root=\(root) \(dataType) count=\(count)")
                    }
                }
            }
            try c.barrier()
        }
        #expect(problems.withLock { $0 }.isEmpty, "\(problems.withLock { $0.prefix(8) })")
        #expect(checked.load(ordering: .relaxed) > 0)
    }

    @Test func autoPicksRecursiveDoublingForSmallAndRingForLargeMessages() throws {
        var configuration = GroupHarness.testConfiguration()
        configuration.recursiveDoublingMaxBytes = 1024
        let mismatches = Mutex<[String]>([])
        try GroupHarness.run(worldSize: 3, configuration: configuration) { c in
            for count in [10, 256, 257, 5000] {
                let inputs = (0 ..< 3).map { TestInputs.make(rank: $0, count: count, dataType: .float32, op: .sum) }
                let expected = count * 4 <= 1024
                    ? ReferenceReduction.recursiveDoublingAllReduce(inputs, count: count, dataType: .float32, op: .sum)
                    : ReferenceReduction.ringAllReduce(inputs, count: count, dataType: .float32, op: .sum)
                var values = inputs[c.rank]
                try values.withUnsafeMutableBytes { try c.allReduce(inPlace: $0, count: count, dataType: .float32) }
                if values != expected { mismatches.withLock { $0.append("rank \(c.rank) count \(count)") } }
            }
        }
        #expect(mismatches.withLock { $0 }.isEmpty, "\(mismatches.withLock { $0 })")
    }

    @Test func typedFormsOfTheOtherCollectives() throws {
        try GroupHarness.run(worldSize: 3) { c in
            let r = c.rank
            let gathered = try c.allGather([Int32(r * 10), Int32(r * 10 + 1)])
            #expect(gathered == [0, 1, 10, 11, 20, 21])
            let block = try c.reduceScatter((0 ..< 6).map { Int64($0 + r) }, op: .sum)
            #expect(block == [Int64(6 * r + 3), Int64(6 * r + 6)])
            var values: [Double] = r == 1 ? [1.5, 2.5] : [0, 0]
            try c.broadcast(&values, root: 1)
            #expect(values == [1.5, 2.5])
            #expect(throws: ChorusError.self) { try c.broadcast(&values, root: 7) }
            try c.barrier()
        }
    }

    @Test func everyCollectiveTakesTheNextOperationID() throws {
        try GroupHarness.run(worldSize: 2) { c in
            let epoch = c.epoch
            #expect(c.lastOperationID == 0)
            _ = try c.allReduce([Float(1)], op: .sum)
            #expect(c.lastOperationID == 1)
            _ = try c.allGather([Int32(c.rank)])
            try c.barrier()
            #expect(c.lastOperationID == 3 && c.epoch == epoch)
            try c.updateTopology()
            #expect(c.lastOperationID == 0 && c.epoch == epoch + 1)
            // Neither peer leaves before both have connected the new ring (leaving mid-formation
            // rightly fails the other's update).
            try c.barrier()
        }
    }
}
