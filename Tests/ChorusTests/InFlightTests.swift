import Chorus
import ChorusLauncher
import ChorusTestSupport
import Dispatch
import Foundation
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Collectives in flight together (`startAllReduce` and the other start forms): started from
/// several threads or async tasks in one order, waited for in any order, each with its own
/// verdict; an abort in the middle of a burst is the verdict of that operation and every later
/// one, the same at every member, with their inputs restored; `allReduceMultiple` retries what
/// failed. Every result is compared bitwise with a sequential reference.
@Suite(.serialized) struct InFlightTests {
    /// Operation `op`'s input at `rank`: distinct for every rank, operation and index, exact in f32.
    static func input(rank: Int, op: Int, count: Int) -> [Float] {
        (0 ..< count).map { Float(rank * 1000 + op * 37 + $0 % 101) }
    }

    /// The sum of `input` over `worldSize` ranks, added in rank order as a sequential reference.
    static func reference(worldSize: Int, op: Int, count: Int) -> [Float] {
        var sum = [Float](repeating: 0, count: count)
        for rank in 0 ..< worldSize {
            let values = input(rank: rank, op: op, count: count)
            for i in 0 ..< count { sum[i] += values[i] }
        }
        return sum
    }

    /// Sizes that differ per operation, from one element to past a ring segment, so that a member
    /// starting them in another order would be a mismatch, not a silent mix-up.
    static func count(of op: Int) -> Int { [1, 1000, 4099, (1 << 18) + 3, 77, 65_536, 12, 300_001][op % 8] }

    @Test func operationsStartedFromSeveralThreadsAndWaitedInAnyOrderMatchTheReference() throws {
        let threads = 6, bursts = 3
        try GroupHarness.run(worldSize: 3) { c in
            for burst in 0 ..< bursts {
                let buffers = (0 ..< threads).map { t in FloatBuffer(Self.input(rank: c.rank, op: burst * threads + t, count: Self.count(of: t))) }
                let turn = Mutex(0)
                let done = DispatchGroup()
                let failures = Mutex<[String]>([])
                for t in 0 ..< threads {
                    done.enter()
                    Thread {
                        defer { done.leave() }
                        // The program orders its starts: thread t starts operation t.
                        while turn.withLock({ $0 }) != t { sched_yield() }
                        let pending: PendingCollective
                        do {
                            pending = try c.startAllReduce(inPlace: buffers[t].raw, count: Self.count(of: t), dataType: .float32)
                        } catch {
                            failures.withLock { $0.append("start \(t): \(error)") }
                            turn.withLock { $0 += 1 }
                            return
                        }
                        turn.withLock { $0 += 1 }
                        // Wait in an order that differs by thread, burst and rank.
                        if (t + burst + c.rank) % 2 == 0 { usleep(UInt32(200 * (threads - t))) }
                        do { try pending.wait() } catch { failures.withLock { $0.append("wait \(t): \(error)") } }
                    }.start()
                }
                done.wait()
                #expect(failures.withLock { $0 }.isEmpty, "rank \(c.rank): \(failures.withLock { $0 })")
                for t in 0 ..< threads {
                    let expected = Self.reference(worldSize: 3, op: burst * threads + t, count: Self.count(of: t))
                    #expect(buffers[t].values == expected, "rank \(c.rank) burst \(burst) operation \(t)")
                }
            }
        }
    }

    @Test(arguments: [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])
    func everyOrderOfWaitingGivesEachOperationItsOwnResult(_ order: [Int]) throws {
        try GroupHarness.run(worldSize: 2) { c in
            // Each member waits in its own order: rank 1 reverses rank 0's.
            let waits = c.rank == 0 ? order : order.reversed()
            let inputs = (0 ..< 3).map { Self.input(rank: c.rank, op: $0, count: Self.count(of: $0 + 1)) }
            let sends = inputs.map { FloatBuffer($0) }
            let receives = (0 ..< 3).map { FloatBuffer(count: Self.count(of: $0 + 1)) }
            let pending = try (0 ..< 3).map { op in
                try c.startAllReduce(send: UnsafeRawBufferPointer(sends[op].raw), receive: receives[op].raw,
                                     count: Self.count(of: op + 1), dataType: .float32)
            }
            for op in waits { try pending[op].wait() }
            for op in 0 ..< 3 {
                #expect(receives[op].values == Self.reference(worldSize: 2, op: op, count: Self.count(of: op + 1)))
                #expect(sends[op].values == inputs[op], "out of place: the input stays")
            }
        }
    }

    @Test func asyncTasksKeepOperationsInFlight() throws {
        try GroupHarness.run(worldSize: 3) { c in
            try blockingAwait {
                let buffers = (0 ..< 5).map { FloatBuffer(Self.input(rank: c.rank, op: $0, count: Self.count(of: $0))) }
                var pending: [PendingCollective] = []
                for op in 0 ..< 5 {
                    pending.append(try await c.startAllReduce(inPlace: buffers[op].raw, count: Self.count(of: op), dataType: .float32))
                }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for handle in pending.reversed() { group.addTask { try await handle.wait() } }
                    try await group.waitForAll()
                }
                for op in 0 ..< 5 {
                    #expect(buffers[op].values == Self.reference(worldSize: 3, op: op, count: Self.count(of: op)))
                }
            }
        }
    }

    /// Operation 3 of a burst of 6 is called with another count at one member: it and every later
    /// operation of the burst get the same mismatch at every member, with their inputs back, while
    /// operations 0-2 keep their results; after `updateTopology()` the failed ones run again correctly.
    @Test func anAbortInTheMiddleOfABurstIsTheVerdictOfEveryLaterOperation() throws {
        let errors = Mutex<[Int: [String]]>([:])
        try GroupHarness.run(worldSize: 3) { c in
            try c.barrier()
            let buffers = (0 ..< 6).map { FloatBuffer(Self.input(rank: c.rank, op: $0, count: Self.count(of: $0))) }
            let pending = try (0 ..< 6).map { op in
                let count = op == 3 && c.rank == 1 ? Self.count(of: op) - 1 : Self.count(of: op)
                return try c.startAllReduce(inPlace: buffers[op].raw, count: count, dataType: .float32)
            }
            var seen: [String] = []
            for op in 0 ..< 6 {
                do {
                    try pending[op].wait()
                    seen.append("ok")
                    #expect(buffers[op].values == Self.reference(worldSize: 3, op: op, count: Self.count(of: op)))
                } catch let error as ChorusError {
                    seen.append("\(error)")
                    #expect(buffers[op].values == Self.input(rank: c.rank, op: op, count: Self.count(of: op)),
                            "rank \(c.rank) operation \(op): the input is restored")
                }
            }
            errors.withLock { $0[c.rank] = seen }
            // A start in the broken epoch has the same verdict, and moves nothing.
            let late = try c.startAllReduce(inPlace: buffers[0].raw, count: 1, dataType: .float32)
            #expect(throws: (any Error).self) { try late.wait() }
            do { try late.wait() } catch { #expect("\(error)" == seen.last) }
            #expect(throws: ChorusError.topologyUpdateRequired) { try c.allReduce(inPlace: buffers[0].raw, count: 1, dataType: .float32) }
            try c.updateTopology()
            let again = try (3 ..< 6).map { op in try c.startAllReduce(inPlace: buffers[op].raw, count: Self.count(of: op), dataType: .float32) }
            for handle in again { try handle.wait() }
            for op in 3 ..< 6 { #expect(buffers[op].values == Self.reference(worldSize: 3, op: op, count: Self.count(of: op))) }
        }
        let seen = errors.withLock { $0 }
        #expect(seen.count == 3 && Set(seen.values).count == 1, "the members saw different outcomes: \(seen)")
        let outcomes = seen[0] ?? []
        #expect(outcomes.prefix(3) == ["ok", "ok", "ok"] && Set(outcomes.dropFirst(3)).count == 1, "\(outcomes)")
        #expect(outcomes.last?.contains("count differs") == true, "\(outcomes)")
    }

    /// Every collective's start form in one burst, waited for in reverse: each output equals its
    /// sequential reference bitwise (the quantized all-reduce equals the blocking call's bits).
    @Test func everyCollectiveCanBeInFlightTogether() throws {
        let n = 3, c = 5000
        try GroupHarness.run(worldSize: n) { comm in
            let r = comm.rank
            let broadcast = FloatBuffer(Self.input(rank: r, op: 1, count: c))
            let gatherSend = FloatBuffer(Self.input(rank: r, op: 2, count: c)), gathered = FloatBuffer(count: c * n)
            let scatterSend = FloatBuffer(Self.input(rank: r, op: 3, count: c * n)), scattered = FloatBuffer(count: c)
            let state = FloatBuffer(Self.input(rank: r, op: 4, count: c))
            let exclusive = FloatBuffer(count: c), inclusive = FloatBuffer(count: c)
            let quantizedSend = FloatBuffer((0 ..< c).map { Float(r) * 0.37 + Float($0 % 97) * 0.01 })
            let quantized = FloatBuffer(count: c), quantizedReference = FloatBuffer(count: c)
            let format = Quantization(.int8)
            let pending = [
                try comm.startBroadcast(broadcast.raw, root: 1),
                try comm.startAllGather(send: UnsafeRawBufferPointer(gatherSend.raw), receive: gathered.raw, count: c, dataType: .float32),
                try comm.startReduceScatter(send: UnsafeRawBufferPointer(scatterSend.raw), receive: scattered.raw, count: c, dataType: .float32),
                try comm.startAllScan(state: UnsafeRawBufferPointer(state.raw), count: c, dataType: .float32,
                                      exclusive: exclusive.raw, inclusive: inclusive.raw),
                try comm.startBarrier(),
                try comm.startAllReduce(send: UnsafeRawBufferPointer(quantizedSend.raw), receive: quantized.raw, count: c,
                                        dataType: .float32, quantization: format),
            ]
            for handle in pending.reversed() { try handle.wait() }
            #expect(broadcast.values == Self.input(rank: 1, op: 1, count: c))
            #expect(gathered.values == (0 ..< n).flatMap { Self.input(rank: $0, op: 2, count: c) })
            let scatterSum = Self.reference(worldSize: n, op: 3, count: c * n)
            #expect(scattered.values == Array(scatterSum[r * c ..< (r + 1) * c]))
            var before = [Float](repeating: 0, count: c)
            for q in 0 ..< r { for (i, v) in Self.input(rank: q, op: 4, count: c).enumerated() { before[i] += v } }
            let mine = Self.input(rank: r, op: 4, count: c)
            #expect(exclusive.values == before && inclusive.values == before.indices.map { before[$0] + mine[$0] }, "rank \(r) scan")
            try comm.allReduce(send: UnsafeRawBufferPointer(quantizedSend.raw), receive: quantizedReference.raw, count: c,
                               dataType: .float32, quantization: format)
            #expect(quantized.values == quantizedReference.values, "in flight or not, the quantized sum has the same bits")
        }
    }

    @Test func allReduceMultipleReducesEveryBuffer() throws {
        var configuration = GroupHarness.testConfiguration()
        configuration.operationsInFlight = 3 // fewer than the buffers: starts wait for the oldest verdict
        try GroupHarness.run(worldSize: 4, configuration: configuration) { c in
            let buffers = (0 ..< 8).map { FloatBuffer(Self.input(rank: c.rank, op: $0, count: Self.count(of: $0))) }
            let ragged = UnsafeMutableRawBufferPointer(rebasing: buffers[1].raw[0 ..< 6])
            #expect(throws: ChorusError.invalidArgument("buffer 1 holds 6 bytes, not whole f32 elements")) {
                try c.allReduceMultiple(inPlace: [buffers[0].raw, ragged], dataType: .float32)
            }
            try c.allReduceMultiple(inPlace: buffers.map(\.raw), dataType: .float32)
            for op in 0 ..< 8 {
                #expect(buffers[op].values == Self.reference(worldSize: 4, op: op, count: Self.count(of: op)), "rank \(c.rank) buffer \(op)")
            }
        }
    }

    /// Three peer processes run bursts of 4 all-reduces in flight; one is SIGKILLed inside a burst.
    /// Each survivor sees one round with failures: the failed operations share one retryable error
    /// (the same at both) with their inputs restored, and after re-forming they run again and every
    /// buffer holds its exact sum.
    @Test(arguments: [0, 20])
    func aKillInsideABurstIsOneVerdictForTheRestAndTheRetryIsCorrect(killAfterMs: UInt32) throws {
        let master = try Master(host: "127.0.0.1", port: 0)
        defer { master.shutdown() }
        let peers = try (0 ..< 3).map { _ in
            try ChildProcess(executable: ProcessFaultTests.binaries + "/chorus-test-peer",
                             arguments: ["--master", master.endpoint, "--world", "3", "--count", "\(1 << 19)", "--rounds", "4",
                                         "--in-flight", "4"],
                             environment: ProcessFaultTests.environment, captureOutput: true)
        }
        let deadline = monotonicMilliseconds() + 120_000
        while !peers[2].outputSoFar(waitMilliseconds: 1).contains("START round=1"), monotonicMilliseconds() < deadline {}
        usleep(killAfterMs * 1000)
        peers[2].signal(SIGKILL)
        #expect(peers[2].waitForExit(timeoutMilliseconds: 10_000) == 128 + SIGKILL)
        ProcessFaultTests.checkRecovery(survivors: Array(peers[0 ..< 2]), expectedWorld: 2)
    }
}
