import Chorus
import ChorusTestSupport
import Synchronization
import Testing

/// All-Scan against its references, bitwise: the chain against the sequential fold (block counts
/// that do and do not divide the state), recursive doubling against its round-by-round fold; every
/// operator, exclusive and inclusive, forward and reverse, world sizes 1 to 8, empty states, decays of
/// every broadcast shape, and decay-0 resets.
@Suite(.serialized) struct AllScanTests {
    static let floats: [DataType] = [.float32, .float64, .float16, .bfloat16]

    /// Decays in (0, 1], with zeros at a few (rank, group) places: a reset.
    static func decay(rank: Int, count: Int, dataType: DataType) -> [UInt8] {
        let values = (0 ..< count).map { (g: Int) -> Double in
            if (rank + g) % 7 == 3 { return 0 }
            let step = Double((rank * 5 + g * 3) % 9)
            return 0.5 + step / 18
        }
        return values.flatMap { v -> [UInt8] in
            switch dataType {
            case .float32: ReferenceReduction.bytes(Float(v))
            case .float64: ReferenceReduction.bytes(v)
            case .float16: ReferenceReduction.bytes(Float16(Float(v)).bitPattern)
            default: ReferenceReduction.bytes(ReferenceReduction.floatToBF16(Float(v)))
            }
        }
    }

    @Test(arguments: 1 ... 8)
    func everyOperatorDirectionAndAlgorithmMatchesItsReference(worldSize n: Int) throws {
        let problems = Mutex<[String]>([])
        let checked = Atomic<Int>(0)
        try GroupHarness.run(worldSize: n) { c in
            let r = c.rank
            for dataType in DataType.allCases {
                for op in ScanOperator.allCases where op != .affine || Self.floats.contains(dataType) {
                    for count in [0, 1, 12, 100] {
                        for decayCount in op == .affine ? [1, 4, count].filter({ $0 > 0 && count % $0 == 0 }) : [1] {
                            let states = (0 ..< n).map { TestInputs.make(rank: $0, count: count, dataType: dataType, op: op == .prod ? .prod : .sum) }
                            let decays = (0 ..< n).map { Self.decay(rank: $0, count: decayCount, dataType: dataType) }
                            for reverse in [false, true] {
                                let chain = ReferenceScan.scan(states: states, decays: decays, count: count, decayCount: decayCount,
                                                               dataType: dataType, op: op, reverse: reverse)[r]
                                let doubling = ReferenceScan.recursiveDoublingScan(states: states, decays: decays, count: count,
                                                                                   decayCount: decayCount, dataType: dataType,
                                                                                   op: op, reverse: reverse)[r]
                                // Blocks 1, 3, 7 of the chain; 0 stands for recursive doubling.
                                for blocks in [1, 3, 7, 0] {
                                    let expected = blocks == 0 ? doubling : chain
                                    var exclusive = [UInt8](repeating: 0xEE, count: count * dataType.size)
                                    var inclusive = exclusive
                                    try states[r].withUnsafeBytes { s in
                                        try decays[r].withUnsafeBytes { d in
                                            try exclusive.withUnsafeMutableBytes { e in
                                                try inclusive.withUnsafeMutableBytes { i in
                                                    try c.allScan(state: s, count: count, dataType: dataType, op: op, decay: d,
                                                                  decayCount: decayCount, exclusive: e, inclusive: i,
                                                                  reverse: reverse, blocks: blocks == 0 ? nil : blocks,
                                                                  algorithm: blocks == 0 ? .recursiveDoubling : .chain)
                                                }
                                            }
                                        }
                                    }
                                    checked.add(1, ordering: .relaxed)
                                    if exclusive != expected.exclusive || inclusive != expected.inclusive {
                                        problems.withLock {
                                            $0.append("n=\(n) r=\(r) \(dataType) \(op) count=\(count) decays=\(decayCount) reverse=\(reverse) K=\(blocks)")
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        #expect(problems.withLock { $0 }.isEmpty, "\(problems.withLock { $0.prefix(6) })")
        #expect(checked.load(ordering: .relaxed) > 0)
    }

    @Test func rankZeroGetsTheIdentityAndArraysWork() throws {
        try GroupHarness.run(worldSize: 3) { c in
            let state: [Float] = [Float(c.rank + 1), -Float(c.rank)]
            let maxScan = try c.allScan(state, op: .max, algorithm: .chain)
            if c.rank == 0 { #expect(maxScan.exclusive == [-.infinity, -.infinity]) }
            let sums = try c.allScan(state, op: .sum)
            let before = (0 ..< c.rank).map { Float($0 + 1) }.reduce(0, +)
            #expect(sums.exclusive[0] == before && sums.inclusive[0] == before + Float(c.rank + 1))
            // Decay 0 on rank 1 resets: rank 2's exclusive is rank 1's state alone.
            let decayed = try c.allScan(state, op: .affine, decay: [c.rank == 1 ? 0 : 0.5], algorithm: .chain)
            if c.rank == 2 { #expect(decayed.exclusive == [2, -1]) }
            #expect(throws: ChorusError.self) { _ = try c.allScan([Int32(1)], op: .affine, decay: [1]) }
        }
    }
}
