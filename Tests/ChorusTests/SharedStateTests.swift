import Chorus
import ChorusTestSupport
import Foundation
import Synchronization
import Testing

/// Shared-state synchronization over real sockets: election, transfer into place, bitwise checks
/// against the version every peer should end with.
@Suite(.serialized) struct SharedStateTests {
    /// One tensor of every dtype, plus per-peer statistics that are allowed to differ.
    static let layout: [(name: String, dataType: DataType, count: Int)] =
        DataType.allCases.enumerated().map { ("t\($0.offset)-\($0.element)", $0.element, 1 + 977 * $0.offset) }

    /// The bytes of tensor `t` in `version`: distinct per version, tensor and index (NaN, ±0, inf included).
    static func bytes(version: Int, tensor t: Int) -> [UInt8] {
        TestInputs.make(rank: version * 16 + t, count: layout[t].count, dataType: layout[t].dataType, op: .sum, specials: true)
    }

    static func makeState(version: Int, revision: UInt64, statistics: Int) throws -> SharedState {
        let state = SharedState(revision: revision)
        for (t, slot) in layout.enumerated() {
            let tensor = try state.add(slot.name, count: slot.count, dataType: slot.dataType)
            tensor.withUnsafeMutableBytes { $0.copyBytes(from: bytes(version: version, tensor: t)) }
        }
        try state.add("statistics", values: (0 ..< 64).map { Float(statistics * 1000 + $0) }, allowedToDiffer: true)
        return state
    }

    static func contents(_ state: SharedState) -> [[UInt8]] {
        state.tensors.map { tensor in tensor.withUnsafeMutableBytes { Array($0) } }
    }

    /// Every tensor that may not differ holds `version` bitwise; the statistics are still this peer's.
    static func holds(_ state: SharedState, version: Int, statistics: Int) -> Bool {
        let actual = contents(state)
        return layout.indices.allSatisfy { actual[$0] == bytes(version: version, tensor: $0) }
            && state["statistics"]!.values(as: Float.self) == (0 ..< 64).map { Float(statistics * 1000 + $0) }
    }

    @Test func outdatedPeersReceiveTheMajorityVersionAndStayEqualAfterUpdates() throws {
        let problems = Mutex<[String]>([])
        @Sendable func check(_ ok: Bool, _ what: @autoclosure () -> String) { if !ok { problems.withLock { $0.append(what()) } } }
        try GroupHarness.run(worldSize: 4) { c in
            // Ranks 0-2 hold version 1; rank 3 drifted to version 2 at the same revision.
            let mine = c.rank == 3 ? 2 : 1
            let state = try Self.makeState(version: mine, revision: 7, statistics: c.rank)
            let result = try c.synchronize(state)
            check(result.revision == 7 && state.revision == 7, "rank \(c.rank): revision \(result.revision)")
            check(result.wasOutdated == (c.rank == 3), "rank \(c.rank): outdated \(result.wasOutdated)")
            check(Set(result.sources) == Set(c.members.prefix(3)), "rank \(c.rank): sources \(result.sources)")
            if c.rank == 3 {
                check(result.receivedTensors == Self.layout.map(\.name), "received \(result.receivedTensors)")
                check(result.bytesReceived == Self.layout.reduce(0) { $0 + $1.count * $1.dataType.size }, "bytes \(result.bytesReceived)")
            }
            // What the three sources served adds up to what the outdated peer received.
            let served = try c.allGather([Int64(result.bytesSent)]).reduce(0, +)
            check(served == Int64(Self.layout.reduce(0) { $0 + $1.count * $1.dataType.size }), "rank \(c.rank): served \(served)")
            check(c.rank != 3 || result.bytesSent == 0, "the receiver served \(result.bytesSent) bytes")
            check(Self.holds(state, version: 1, statistics: c.rank), "rank \(c.rank) does not hold version 1 bitwise")

            // A deterministic update after an all-reduce keeps everyone equal: the next sync moves nothing.
            let weights = state[Self.layout[0].name]!
            var gradient = (0 ..< weights.count).map { Float(c.rank * 100_000 + $0) * 0.001 }
            try c.allReduce(&gradient)
            weights.withUnsafeMutableBufferPointer(as: Float.self) { w in
                for i in w.indices { w[i] -= 0.01 * gradient[i] }
            }
            state.revision += 1
            let again = try c.synchronize(state)
            check(!again.wasOutdated && again.bytesReceived == 0 && again.sources.isEmpty, "rank \(c.rank): \(again)")
            let hashes = try c.allGather([Int64(bitPattern: state.contentHash)])
            check(Set(hashes).count == 1, "rank \(c.rank): content hashes differ after the update: \(hashes)")
        }
        #expect(problems.withLock { $0 } == [])
    }

    @Test func aPeerThatSkippedAStepIsRepairedAndProgressIsReported() throws {
        let problems = Mutex<[String]>([])
        @Sendable func check(_ ok: Bool, _ what: @autoclosure () -> String) { if !ok { problems.withLock { $0.append(what()) } } }
        var configuration = GroupHarness.testConfiguration()
        configuration.syncChunkBytes = 1000 // many chunks, so the transfer stripes and reports progress often
        try GroupHarness.run(worldSize: 3, configuration: configuration) { c in
            let state = try Self.makeState(version: 1, revision: 0, statistics: c.rank)
            try c.synchronize(state)
            // Ranks 0 and 1 take a step (version 3, revision 1); rank 2 misses it and keeps version 1 at revision 0.
            if c.rank != 2 {
                for (t, tensor) in state.tensors.prefix(Self.layout.count).enumerated() {
                    tensor.withUnsafeMutableBytes { $0.copyBytes(from: Self.bytes(version: 3, tensor: t)) }
                }
                state.revision = 1
            }
            let seen = Mutex<[SyncProgress]>([])
            let result = try c.synchronize(state) { progress in seen.withLock { $0.append(progress) } }
            check(result.revision == 1 && state.revision == 1, "rank \(c.rank): revision \(state.revision)")
            check(result.wasOutdated == (c.rank == 2), "rank \(c.rank): outdated \(result.wasOutdated)")
            check(Self.holds(state, version: 3, statistics: c.rank), "rank \(c.rank) does not hold version 3 bitwise")
            let progress = seen.withLock { $0 }
            if c.rank == 2 {
                check(progress.count > 20 && progress.last == SyncProgress(bytesReceived: result.bytesReceived, bytesTotal: result.bytesReceived)
                      && zip(progress, progress.dropFirst()).allSatisfy { $0.bytesReceived < $1.bytesReceived },
                      "progress \(progress.count) reports, last \(String(describing: progress.last))")
            } else {
                check(progress.isEmpty, "a source reported progress")
            }
        }
        #expect(problems.withLock { $0 } == [])
    }

    @Test func aSendOnlyPeerWithoutTheElectedStateFailsEveryoneTheSameWay() throws {
        let errors = Mutex<[String]>([])
        try GroupHarness.run(worldSize: 3) { c in
            let state = try Self.makeState(version: c.rank == 2 ? 5 : 1, revision: 3, statistics: c.rank)
            do {
                try c.synchronize(state, strategy: c.rank == 2 ? .sendOnly : .elect)
                errors.withLock { $0.append("rank \(c.rank): no error") }
            } catch let error as ChorusError {
                errors.withLock { $0.append("\(error) retryable=\(error.isRetryable) ids=\(c.members[2])") }
            }
            // Nobody's tensors were written.
            if !Self.holds(state, version: c.rank == 2 ? 5 : 1, statistics: c.rank) { errors.withLock { $0.append("rank \(c.rank) was written") } }
        }
        let seen = errors.withLock { $0 }
        #expect(seen.count == 3 && Set(seen).count == 1, "\(seen)")
        #expect(seen.first?.contains("send-only peer") == true && seen.first?.contains("retryable=false") == true, "\(seen)")
    }

    @Test func differentTensorsAreRefusedWithAPreciseError() throws {
        let errors = Mutex<[String]>([])
        try GroupHarness.run(worldSize: 2) { c in
            let state = SharedState(revision: 1)
            try state.add("w", count: c.rank == 0 ? 10 : 11, dataType: .float32)
            do {
                try c.synchronize(state)
            } catch let error as ChorusError {
                errors.withLock { $0.append("\(error)") }
            }
        }
        let seen = errors.withLock { $0 }
        #expect(seen.count == 2 && Set(seen).count == 1 && seen[0].contains("'w'"), "\(seen)")
    }

    /// Bytes that change at the source while they are being sent do not slip through: the receiver
    /// re-hashes what it got, and every member gets the same abort naming the tensor.
    @Test func aTransferThatDeliversOtherBytesIsCaughtByTheHash() throws {
        let count = 4 << 20 // f32: 16 MiB in 1 MiB chunks
        var configuration = GroupHarness.testConfiguration()
        configuration.syncChunkBytes = 1 << 20
        let sourceMemory = UnsafeMutableBufferPointer<Float>.allocate(capacity: count)
        defer { sourceMemory.deallocate() }
        _ = sourceMemory.initialize(from: (0 ..< count).map { Float($0) })
        nonisolated(unsafe) let shared = sourceMemory
        let receiverPaused = DispatchSemaphore(value: 0), corrupted = DispatchSemaphore(value: 0)
        // Stands in for a source whose memory changes under the transfer (a bug, a bad DIMM).
        Task(executorPreference: ThreadPerJobExecutor.shared) { @Sendable in
            guard receiverPaused.wait(timeout: .now() + 120) == .success else { return }
            shared[count - 1] = -1 // in the last chunk, which has not been sent yet
            corrupted.signal()
        }
        let errors = Mutex<[Int: ChorusError]>([:])
        try GroupHarness.run(worldSize: 2, configuration: configuration) { c in
            let state = SharedState(revision: c.rank == 0 ? 5 : 4)
            if c.rank == 0 {
                try state.add("w", borrowing: UnsafeMutableRawBufferPointer(shared), dataType: .float32)
            } else {
                try state.add("w", count: count, dataType: .float32)
            }
            var paused = false
            do {
                try c.synchronize(state) { progress in
                    guard !paused, progress.bytesReceived * 10 >= progress.bytesTotal * 3 else { return }
                    paused = true
                    receiverPaused.signal()
                    _ = corrupted.wait(timeout: .now() + 60)
                }
                Issue.record("rank \(c.rank): the corrupted transfer succeeded")
            } catch let error as ChorusError {
                errors.withLock { $0[c.rank] = error }
            }
        }
        let seen = errors.withLock { $0 }
        #expect(seen.count == 2 && Set(seen.values).count == 1, "\(seen)")
        guard case .aborted(.stateTransferFailed(_, let detail))? = seen[0] else {
            Issue.record("not a transfer failure: \(String(describing: seen[0]))")
            return
        }
        #expect(detail.contains("tensor 'w' hashes to") && detail.contains("not the elected"), "\(detail)")
    }

    @Test func invalidTensorsAreRejectedLocally() throws {
        let state = SharedState()
        try state.add("w", count: 4, dataType: .float32)
        #expect(throws: ChorusError.self) { try state.add("w", count: 4, dataType: .float32) }
        #expect(throws: ChorusError.self) { try state.add("", count: 4, dataType: .float32) }
        #expect(throws: ChorusError.self) { try state.add("x", count: -1, dataType: .float32) }
        var odd = [UInt8](repeating: 0, count: 7)
        try odd.withUnsafeMutableBytes { buffer in
            #expect(throws: ChorusError.self) { try state.add("odd", borrowing: buffer, dataType: .float32) }
        }
    }

    static func weights(_ i: Int) -> Float { Float(i % 1_000_003) * 0.25 - Float(i / 1_000_003) }

    /// A joiner arrives while two members run, is admitted at their safe point, and catches up on
    /// 100 MiB of state striped across both.
    @Test func aJoinerCatchesUpOn100MiB() throws {
        let count = 25 << 20 // f32: 100 MiB
        let configuration = GroupHarness.testConfiguration()
        let master = try Master(host: "127.0.0.1", port: 0, configuration: configuration)
        defer { master.shutdown() }
        let endpoint = master.endpoint
        let outcomes = Mutex<[String]>([])
        let done = DispatchSemaphore(value: 0)
        func spawn(_ body: @escaping @Sendable () throws -> String) {
            Task(executorPreference: ThreadPerJobExecutor.shared) { @Sendable in
                let outcome: String
                do { outcome = try body() } catch { outcome = "error: \(error)" }
                outcomes.withLock { $0.append(outcome) }
                done.signal()
            }
        }
        for _ in 0 ..< 2 {
            spawn {
                let c = try Communicator(master: endpoint, configuration: configuration)
                while c.worldSize < 2 { try c.updateTopology(minimumWorldSize: 2) }
                let state = SharedState(revision: 41)
                try state.add("w", values: (0 ..< count).map(Self.weights))
                try c.synchronize(state)
                while !c.topologyChangePending { try c.barrier() } // training steps, until the joiner waits
                try c.updateTopology()
                let result = try c.synchronize(state)
                return "member outdated=\(result.wasOutdated) world=\(c.worldSize) hash=\(state.contentHash)"
            }
        }
        spawn {
            while master.currentStatus.worldSize < 2 { Thread.sleep(forTimeInterval: 0.01) }
            let c = try Communicator(master: endpoint, configuration: configuration)
            let state = SharedState()
            try state.add("w", count: count, dataType: .float32)
            let result = try c.synchronize(state, strategy: .receiveOnly)
            let exact = state["w"]!.withUnsafeMutableBufferPointer(as: Float.self) { w in
                w.indices.allSatisfy { w[$0].bitPattern == Self.weights($0).bitPattern }
            }
            return "joiner outdated=\(result.wasOutdated) sources=\(result.sources.count) bytes=\(result.bytesReceived)"
                + " exact=\(exact) revision=\(state.revision) world=\(c.worldSize) hash=\(state.contentHash)"
        }
        for _ in 0 ..< 3 { #expect(done.wait(timeout: .now() + 300) == .success) }
        let seen = outcomes.withLock { $0 }.sorted()
        #expect(seen.count == 3)
        #expect(seen.first?.hasPrefix("joiner outdated=true sources=2 bytes=\(count * 4) exact=true revision=41 world=3") == true, "\(seen)")
        #expect(seen.dropFirst().allSatisfy { $0.hasPrefix("member outdated=false world=3") }, "\(seen)")
        #expect(Set(seen.map { $0.split(separator: " ").last! }).count == 1, "content hashes differ: \(seen)")
    }
}
