import Chorus
import Dispatch
import Synchronization
import Testing

/// Members that call different collectives, or the same one with different arguments, all get one
/// precise, non-retryable error naming the field, the values and the ranks, at once (not after the
/// operation timeout); a rank that never calls is a timeout naming it. The group goes on afterwards.
@Suite(.serialized) struct MismatchTests {
    /// World 3 (or `worldSize`), rank 1 calls `odd`, the others `usual`; returns the error every
    /// rank got, after checking it is one error, the same everywhere, and that the group then
    /// re-forms and works.
    static func mismatch(worldSize: Int = 3, usual: @escaping @Sendable (Communicator) throws -> Void,
                         odd: @escaping @Sendable (Communicator) throws -> Void) throws -> String {
        var configuration = GroupHarness.testConfiguration()
        configuration.operationTimeout = .seconds(20)
        let errors = Mutex<[Int: ChorusError]>([:])
        try GroupHarness.run(worldSize: worldSize, configuration: configuration) { c in
            // Every member connected in one epoch first: a member still connecting its ring when the
            // others' mismatch is decided would move on to the next epoch and call there instead.
            try c.barrier()
            let started = ContinuousClock.now
            do {
                try (c.rank == 1 ? odd : usual)(c)
                Issue.record("rank \(c.rank): the mismatched call succeeded")
            } catch let error as ChorusError {
                errors.withLock { $0[c.rank] = error }
            }
            // A bound, not a speed: stopped long before the 20 s operation timeout would end the wait.
            #expect(ContinuousClock.now - started < .seconds(10), "rank \(c.rank) waited \(ContinuousClock.now - started)")
            try c.updateTopology()
            var values = [Int32(c.rank + 1), 10]
            try c.allReduce(&values)
            #expect(values == [Int32(worldSize * (worldSize + 1) / 2), Int32(10 * worldSize)], "rank \(c.rank) after the mismatch: \(values)")
        }
        let seen = errors.withLock { $0 }
        #expect(seen.count == worldSize && Set(seen.values).count == 1, "\(seen)")
        guard case .aborted(.argumentMismatch(let detail))? = seen[0] else {
            Issue.record("not an argument mismatch: \(String(describing: seen[0]))")
            return ""
        }
        #expect(seen[0]?.isRetryable == false)
        return detail
    }

    @Test func aDifferentCollective() throws {
        let detail = try Self.mismatch(usual: { c in _ = try c.allReduce([Float](repeating: 1, count: 5), algorithm: .ring) },
                                       odd: { c in try c.barrier() })
        #expect(detail.contains("collective differs: "), "\(detail)")
        #expect(detail.contains("allReduce(count 5, dataType f32, op sum, algorithm ring) at rank"), "\(detail)")
        #expect(detail.contains("barrier at rank 1"), "\(detail)")
    }

    @Test func aDifferentCount() throws {
        let detail = try Self.mismatch(usual: { c in _ = try c.allReduce([Float](repeating: 1, count: 5)) },
                                       odd: { c in _ = try c.allReduce([Float](repeating: 1, count: 6)) })
        #expect(detail.contains("count differs: ") && detail.contains("6 at rank 1") && detail.contains("5 at rank"), "\(detail)")
    }

    @Test func aDifferentDataType() throws {
        let detail = try Self.mismatch(usual: { c in _ = try c.allReduce([Float](repeating: 1, count: 5)) },
                                       odd: { c in _ = try c.allReduce([Int32](repeating: 1, count: 5)) })
        #expect(detail.contains("dataType differs: ") && detail.contains("i32 at rank 1") && detail.contains("f32 at rank"), "\(detail)")
    }

    /// In a pair too, where each member's data phase completes and only the token, sent ahead of
    /// the data, tells the calls apart.
    @Test(arguments: [2, 3]) func aDifferentOperator(worldSize: Int) throws {
        let detail = try Self.mismatch(worldSize: worldSize, usual: { c in _ = try c.allReduce([Float](repeating: 1, count: 5), op: .sum) },
                                       odd: { c in _ = try c.allReduce([Float](repeating: 1, count: 5), op: .max) })
        #expect(detail.contains("op differs: ") && detail.contains("max at rank 1") && detail.contains("sum at rank"), "\(detail)")
    }

    @Test func aDifferentRoot() throws {
        let detail = try Self.mismatch(usual: { c in var v = [Float](repeating: 1, count: 5); try c.broadcast(&v, root: 0) },
                                       odd: { c in var v = [Float](repeating: 1, count: 5); try c.broadcast(&v, root: 2) })
        #expect(detail.contains("root differs: ") && detail.contains("2 at rank 1") && detail.contains("0 at rank"), "\(detail)")
    }

    /// In a pair too, where the two calls' data and tokens take different links (the ring's lanes,
    /// the mesh), so neither member's token reaches the other: the calls the members announce to
    /// the master when their data stalls end it.
    @Test(arguments: [2, 3]) func aDifferentAlgorithm(worldSize: Int) throws {
        let detail = try Self.mismatch(
            worldSize: worldSize,
            usual: { c in _ = try c.allReduce([Float](repeating: 1, count: 5), algorithm: .ring) },
            odd: { c in _ = try c.allReduce([Float](repeating: 1, count: 5), algorithm: .recursiveDoubling) })
        #expect(detail.contains("algorithm differs: ") && detail.contains("recursiveDoubling at rank 1") && detail.contains("ring at rank"),
                "\(detail)")
    }

    /// Also: the abort puts back the in-place input and the error feedback the call had already
    /// advanced (it quantizes before anything moves).
    @Test func aDifferentQuantization() throws {
        @Sendable func call(_ c: Communicator, _ format: Quantization) throws {
            let input = (0 ..< 100).map { Float(c.rank * 100 + $0) * 0.01 }
            let before = (0 ..< 100).map { Float($0) * 1e-3 }
            var values = input, feedback = before
            defer {
                #expect(values == input && feedback == before, "rank \(c.rank): input or feedback not restored")
            }
            try c.allReduce(&values, quantization: format, errorFeedback: &feedback)
        }
        let detail = try Self.mismatch(usual: { c in try call(c, Quantization(.int8)) },
                                       odd: { c in try call(c, Quantization(.int4, scaling: .minMax)) })
        #expect(detail.contains("algorithm differs: ") && detail.contains("quantized(int4 min-max, blocks of 64) at rank 1")
                    && detail.contains("quantized(int8 absmax, blocks of 64) at rank"), "\(detail)")
    }

    @Test func aRankThatNeverCallsIsATimeoutNamingIt() throws {
        var configuration = GroupHarness.testConfiguration()
        configuration.operationTimeout = .seconds(2)
        let errors = Mutex<[Int: ChorusError]>([:])
        let othersDone = DispatchSemaphore(value: 0)
        try GroupHarness.run(worldSize: 3, configuration: configuration) { c in
            try c.barrier() // every member connected in one epoch first
            if c.rank == 2 {
                for _ in 0 ..< 2 { #expect(othersDone.wait(timeout: .now() + 60) == .success) }
            } else {
                do {
                    try c.barrier()
                    Issue.record("rank \(c.rank): the barrier passed without rank 2")
                } catch let error as ChorusError {
                    errors.withLock { $0[c.rank] = error }
                }
                othersDone.signal()
            }
            try c.updateTopology()
            try c.barrier()
        }
        let seen = errors.withLock { $0 }
        #expect(seen.count == 2 && Set(seen.values).count == 1, "\(seen)")
        guard case .aborted(.timedOut(_, let notArrived))? = seen[0] else {
            Issue.record("not a timeout verdict: \(String(describing: seen[0]))")
            return
        }
        #expect(notArrived == [2])
        #expect("\(seen[0]!)".contains("rank 2 never called the operation"), "\(seen[0]!)")
    }
}
