import Chorus
import ChorusTestSupport
import Synchronization
import Testing

/// Groups larger than the machine has cores, with the default configuration (no timeout raised):
/// the links an epoch opens grow as log2 of the world, and every collective stays exact.
@Suite(.serialized) struct ScaleTests {
    /// What an epoch should open at rank `r` of `n`, counted here apart from the library: the
    /// master, one lane to each ring neighbour, and a mesh link to every member a power of two away.
    static func expectedConnections(rank r: Int, worldSize n: Int) -> Int {
        let partners = (0 ..< n).filter { j in j != r && (abs(j - r) & (abs(j - r) - 1)) == 0 }.count
        return 1 + 2 + partners
    }

    @Test(arguments: [4, 16])
    func anEpochOpensTheRingAndTheMembersAPowerOfTwoAway(worldSize n: Int) throws {
        let problems = Mutex<[String]>([])
        try GroupHarness.run(worldSize: n, configuration: Configuration()) { c in
            let opened = c.openConnectionCount, expected = Self.expectedConnections(rank: c.rank, worldSize: n)
            var values = [Int64](repeating: Int64(c.rank + 1), count: 3)
            try c.allReduce(&values, algorithm: .recursiveDoubling)
            if opened != expected || values != [Int64](repeating: Int64(n * (n + 1) / 2), count: 3) {
                problems.withLock { $0.append("rank \(c.rank): \(opened) connections (expected \(expected)), sum \(values)") }
            }
        }
        #expect(problems.withLock { $0 } == [])
    }

    /// 64 peers on 2 cores, default timeouts: every collective against its sequential reference,
    /// then a synchronization whose one outdated member pulls from sources outside its pattern
    /// (it dials them then; the sources adopt the links).
    @Test func sixtyFourPeersRunEveryCollectiveWithDefaultTimeouts() throws {
        let n = 64
        let problems = Mutex<[String]>([])
        @Sendable func check(_ ok: Bool, _ what: @autoclosure () -> String) { if !ok { problems.withLock { $0.append(what()) } } }
        try GroupHarness.run(worldSize: n, configuration: Configuration(), timeout: .seconds(600)) { c in
            let r = c.rank
            check(c.openConnectionCount == Self.expectedConnections(rank: r, worldSize: n),
                  "rank \(r): \(c.openConnectionCount) connections, expected \(Self.expectedConnections(rank: r, worldSize: n))")
            for count in [1, 300] {
                let inputs = (0 ..< n).map { TestInputs.make(rank: $0, count: count, dataType: .float32, op: .sum) }
                for algorithm in [AllReduceAlgorithm.recursiveDoubling, .ring] {
                    var reduced = inputs[r]
                    try reduced.withUnsafeMutableBytes { try c.allReduce(inPlace: $0, count: count, dataType: .float32, op: .sum, algorithm: algorithm) }
                    let expected = algorithm == .ring
                        ? ReferenceReduction.ringAllReduce(inputs, count: count, dataType: .float32, op: .sum)
                        : ReferenceReduction.recursiveDoublingAllReduce(inputs, count: count, dataType: .float32, op: .sum)
                    check(reduced == expected, "rank \(r): all-reduce \(algorithm) count \(count)")
                }
                let blocks = (0 ..< n).map { TestInputs.make(rank: $0, count: count * n, dataType: .int64, op: .sum) }
                var block = [UInt8](repeating: 0xEE, count: count * 8)
                try blocks[r].withUnsafeBytes { send in
                    try block.withUnsafeMutableBytes { try c.reduceScatter(send: send, receive: $0, count: count, dataType: .int64, op: .sum) }
                }
                let all = ReferenceReduction.ringReduceScatter(blocks, count: count * n, dataType: .int64, op: .sum)
                check(block == Array(all[r * count * 8 ..< (r + 1) * count * 8]), "rank \(r): reduce-scatter count \(count)")
                var gathered = [UInt8](repeating: 0xEE, count: count * 8 * n)
                try blocks[r].withUnsafeBytes { send in
                    try gathered.withUnsafeMutableBytes {
                        try c.allGather(send: UnsafeRawBufferPointer(rebasing: send.prefix(count * 8)), receive: $0, count: count, dataType: .int64)
                    }
                }
                check(gathered == blocks.flatMap { $0.prefix(count * 8) }, "rank \(r): all-gather count \(count)")
                var broadcast = r == 37 ? inputs[r] : [UInt8](repeating: 0xEE, count: inputs[r].count)
                try broadcast.withUnsafeMutableBytes { try c.broadcast($0, root: 37) }
                check(broadcast == inputs[37], "rank \(r): broadcast count \(count)")
                let decays = (0 ..< n).map { _ in [UInt8](repeating: 0, count: 0) }
                let chain = ReferenceScan.scan(states: inputs, decays: decays, count: count, decayCount: 1, dataType: .float32, op: .sum, reverse: false)[r]
                let doubling = ReferenceScan.recursiveDoublingScan(states: inputs, decays: decays, count: count, decayCount: 1,
                                                                   dataType: .float32, op: .sum, reverse: false)[r]
                for algorithm in [ScanAlgorithm.chain, .recursiveDoubling] {
                    var exclusive = [UInt8](repeating: 0xEE, count: count * 4), inclusive = exclusive
                    try inputs[r].withUnsafeBytes { s in
                        try exclusive.withUnsafeMutableBytes { e in
                            try inclusive.withUnsafeMutableBytes { i in
                                try c.allScan(state: s, count: count, dataType: .float32, op: .sum, exclusive: e, inclusive: i, algorithm: algorithm)
                            }
                        }
                    }
                    let expected = algorithm == .chain ? chain : doubling
                    check(exclusive == expected.exclusive && inclusive == expected.inclusive, "rank \(r): all-scan \(algorithm) count \(count)")
                }
            }
            try c.barrier()

            // Rank 0 drifted; the rest elect their version and rank 0 pulls it from all 63.
            let version = r == 0 ? 2 : 1
            let state = try SharedStateTests.makeState(version: version, revision: 5, statistics: r)
            let result = try c.synchronize(state)
            check(result.wasOutdated == (r == 0), "rank \(r): outdated \(result.wasOutdated)")
            check(SharedStateTests.holds(state, version: 1, statistics: r), "rank \(r) does not hold the elected state bitwise")
            if r == 0 {
                // Its pattern links, plus the sources it dialed (every one it pulled a chunk from).
                check(c.openConnectionCount > Self.expectedConnections(rank: 0, worldSize: n), "rank 0 dialed no source: \(c.openConnectionCount)")
            }
            let hashes = try c.allGather([Int64(bitPattern: state.contentHash)])
            check(Set(hashes).count == 1, "rank \(r): content hashes differ: \(Set(hashes).count) values")
        }
        #expect(problems.withLock { $0 } == [])
    }
}
