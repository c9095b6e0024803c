import Chorus
import ChorusTestSupport
import Synchronization
import Testing

/// Ring all-reduce over real sockets for world sizes 1 to 8: every dtype and op, element counts 0,
/// 1, primes and non-multiples of the world size, in place and out of place, compared bitwise with
/// the sequential reference fold. Small segments make even small counts cross segment boundaries.
@Suite(.serialized) struct AllReduceMatrixTests {
    static let counts = [0, 1, 2, 3, 7, 13, 97, 1031]

    /// Over the default transport (shared memory between the threads of this process).
    @Test(arguments: 1 ... 8)
    func everyDtypeOpAndCountMatchesTheReference(worldSize: Int) throws {
        try Self.checkEveryDtypeOpAndCount(worldSize: worldSize, transport: .auto)
    }

    /// The same over TCP alone (the data path between hosts).
    @Test(arguments: [2, 3, 5])
    func everyDtypeOpAndCountMatchesTheReferenceOverTCP(worldSize: Int) throws {
        try Self.checkEveryDtypeOpAndCount(worldSize: worldSize, transport: .tcp)
    }

    static func checkEveryDtypeOpAndCount(worldSize: Int, transport: TransportKind) throws {
        let checked = Atomic<Int>(0)
        let mismatches = Mutex<[String]>([])
        var configuration = GroupHarness.testConfiguration(segmentBytes: 64)
        configuration.transport = transport
        try GroupHarness.run(worldSize: worldSize, configuration: configuration) { communicator in
            let rank = communicator.rank, n = communicator.worldSize
            for dataType in DataType.allCases {
                for op in ReduceOp.allCases {
                    for count in Self.counts {
                        let inputs = (0 ..< n).map { TestInputs.make(rank: $0, count: count, dataType: dataType, op: op) }
                        let expected = ReferenceReduction.ringAllReduce(inputs, count: count, dataType: dataType, op: op)
                        // Out of place: the input must stay untouched.
                        let mine = inputs[rank]
                        var output = [UInt8](repeating: 0xEE, count: mine.count)
                        try mine.withUnsafeBytes { send in
                            try output.withUnsafeMutableBytes { receive in
                                try communicator.allReduce(send: send, receive: receive, count: count, dataType: dataType, op: op,
                                                               algorithm: .ring)
                            }
                        }
                        // In place.
                        var inPlace = mine
                        try inPlace.withUnsafeMutableBytes {
                            try communicator.allReduce(inPlace: $0, count: count, dataType: dataType, op: op, algorithm: .ring)
                        }
                        if output != expected || inPlace != expected || communicator.transport != (transport == .tcp ? .tcp : .shm) {
                            mismatches.withLock { $0.append("n=\(n) rank=\(rank) \(communicator.transport) \(dataType) \(op) count=\(count)") }
                        }
                        checked.add(2, ordering: .relaxed)
                    }
                }
            }
        }
        #expect(mismatches.withLock { $0 }.isEmpty, "\(mismatches.withLock { $0.prefix(5) })")
        #expect(checked.load(ordering: .relaxed) == worldSize * DataType.allCases.count * ReduceOp.allCases.count * Self.counts.count * 2)
    }

    @Test func specialFloatValuesAreBitIdenticalEverywhere() throws {
        let worldSize = 4, count = 301
        let mismatches = Mutex<[String]>([])
        try GroupHarness.run(worldSize: worldSize, configuration: GroupHarness.testConfiguration(segmentBytes: 128)) { c in
            for dataType in [DataType.float32, .float64, .float16, .bfloat16] {
                for op in ReduceOp.allCases {
                    let inputs = (0 ..< worldSize).map { TestInputs.make(rank: $0, count: count, dataType: dataType, op: op, specials: true) }
                    let references: [(AllReduceAlgorithm, [UInt8])] = [
                        (.ring, ReferenceReduction.ringAllReduce(inputs, count: count, dataType: dataType, op: op)),
                        (.recursiveDoubling, ReferenceReduction.recursiveDoublingAllReduce(inputs, count: count, dataType: dataType, op: op)),
                    ]
                    for (algorithm, expected) in references {
                        var values = inputs[c.rank]
                        try values.withUnsafeMutableBytes {
                            try c.allReduce(inPlace: $0, count: count, dataType: dataType, op: op, algorithm: algorithm)
                        }
                        if values != expected { mismatches.withLock { $0.append("rank \(c.rank) \(dataType) \(op) \(algorithm)") } }
                    }
                }
            }
        }
        #expect(mismatches.withLock { $0 }.isEmpty, "\(mismatches.withLock { $0 })")
    }

    @Test func stripingOverSeveralConnectionsGivesTheSameBits() throws {
        var configuration = GroupHarness.testConfiguration(segmentBytes: 64)
        configuration.connectionsPerPeer = 3
        let mismatches = Mutex<[String]>([])
        try GroupHarness.run(worldSize: 3, configuration: configuration) { c in
            for dataType in [DataType.float32, .bfloat16, .int64] {
                for count in [0, 5, 1031, 20_011] {
                    let inputs = (0 ..< 3).map { TestInputs.make(rank: $0, count: count, dataType: dataType, op: .sum) }
                    let expected = ReferenceReduction.ringAllReduce(inputs, count: count, dataType: dataType, op: .sum)
                    var values = inputs[c.rank]
                    try values.withUnsafeMutableBytes {
                        try c.allReduce(inPlace: $0, count: count, dataType: dataType, op: .sum, algorithm: .ring)
                    }
                    if values != expected { mismatches.withLock { $0.append("rank \(c.rank) \(dataType) \(count)") } }
                }
            }
        }
        #expect(mismatches.withLock { $0 }.isEmpty, "\(mismatches.withLock { $0 })")
    }

    @Test func typedArrayAndAsyncFormsAgree() async throws {
        let results = Mutex<[Int: [Float]]>([:])
        try GroupHarness.run(worldSize: 3) { c in
            let input = (0 ..< 1000).map { Float(c.rank * 1000 + $0) }
            let outOfPlace = try c.allReduce(input, op: .max)
            var inPlace = input
            try c.allReduce(&inPlace, op: .max)
            // The async forms, on the communicator's queue.
            let asyncOutOfPlace = try blockingAwait { try await c.allReduce(input, op: .max) }
            let asyncInPlace = try blockingAwait { () async throws -> [Float] in
                var values = input
                try await c.allReduce(&values, op: .max)
                return values
            }
            let expected = (0 ..< 1000).map { Float(2000 + $0) }
            #expect(outOfPlace == expected && inPlace == expected && asyncOutOfPlace == expected && asyncInPlace == expected)
            results.withLock { $0[c.rank] = outOfPlace }
        }
        #expect(results.withLock { $0.count } == 3)
    }

    @Test func asyncCallsDoNotBlockTheCooperativePool() async throws {
        let master = try Master(host: "127.0.0.1", port: 0)
        defer { master.shutdown() }
        let configuration = GroupHarness.testConfiguration()
        // More peers than cooperative threads (2 cores): blocking the pool would deadlock this.
        let sums = try await withThrowingTaskGroup(of: [Int64].self) { group in
            for _ in 0 ..< 4 {
                group.addTask {
                    let c = try await Communicator.connect(master: master.endpoint, configuration: configuration)
                    while c.worldSize < 4 { try await c.updateTopology(minimumWorldSize: 4) }
                    var values = [Int64](repeating: Int64(c.rank + 1), count: 10)
                    try await c.allReduce(&values, op: .sum)
                    let copy = try await c.allReduce(values, op: .max)
                    try await c.leave()
                    return copy
                }
            }
            var all: [[Int64]] = []
            for try await result in group { all.append(result) }
            return all
        }
        #expect(sums.count == 4 && sums.allSatisfy { $0 == [Int64](repeating: 10, count: 10) })
    }

    @Test func aWorldOfOneReturnsAtOnce() throws {
        try GroupHarness.run(worldSize: 1) { c in
            var values: [Double] = [1.5, -2, 3]
            try c.allReduce(&values, op: .avg)
            #expect(values == [1.5, -2, 3])
            let product = try c.allReduce([7 as Int32], op: .prod)
            #expect(product == [7])
            #expect(c.worldSize == 1 && c.rank == 0)
        }
    }

    @Test func invalidArgumentsGetAClearErrorAndNothingElse() throws {
        try GroupHarness.run(worldSize: 2) { c in
            var small = [UInt8](repeating: 0, count: 8)
            let error = #expect(throws: ChorusError.self) {
                try small.withUnsafeMutableBytes { try c.allReduce(inPlace: $0, count: 4, dataType: .float32) }
            }
            #expect(error?.isRetryable == false)
            if case .invalidArgument? = error {} else { Issue.record("expected invalidArgument, got \(String(describing: error))") }
            // The group is still usable afterwards.
            let sum = try c.allReduce([Int64(c.rank)], op: .sum)
            #expect(sum == [1])
        }
    }

    @Test func mismatchedArgumentsAbortEveryoneWithTheSameFatalError() throws {
        let errors = Mutex<[ChorusError]>([])
        try GroupHarness.run(worldSize: 3) { c in
            try c.barrier() // every member connected in one epoch before the mismatched call
            let count = c.rank == 1 ? 6 : 5
            do {
                _ = try c.allReduce([Float](repeating: 1, count: count), op: .sum)
                Issue.record("mismatched all-reduce succeeded")
            } catch let error as ChorusError {
                errors.withLock { $0.append(error) }
            }
        }
        let seen = errors.withLock { $0 }
        #expect(seen.count == 3 && Set(seen).count == 1, "\(seen)")
        #expect(seen.first?.isRetryable == false, "\(seen)")
    }
}
