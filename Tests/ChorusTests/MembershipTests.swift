import Chorus
import Foundation
import Synchronization
import Testing

/// Joining and leaving while a group trains: threads of this process, real sockets.
@Suite(.serialized) struct MembershipTests {
    /// The training loop of the docs: re-form only when the master says peers wait to join or leave.
    static func step(_ c: Communicator, round: Int) throws -> Bool {
        if c.topologyChangePending { try c.updateTopology() }
        let n = c.worldSize
        var values = (0 ..< 257).map { Float(c.rank + round + $0 % 5) }
        let original = values
        do {
            try c.allReduce(&values, op: .sum)
        } catch let error as ChorusError where error.isRetryable {
            #expect(values == original, "input restored")
            try c.updateTopology()
            return false
        }
        let expected = (0 ..< 257).map { Float(n * (n - 1) / 2 + n * (round + $0 % 5)) }
        #expect(values == expected, "round \(round) in a world of \(n)")
        return true
    }

    @Test func aPeerJoinsWhileOthersTrainAndIsAdmittedAtTheNextSafePoint() throws {
        let master = try Master(host: "127.0.0.1", port: 0)
        defer { master.shutdown() }
        let configuration = GroupHarness.testConfiguration()
        let worlds = Mutex<[Int: Set<Int>]>([:])
        let finished = DispatchSemaphore(value: 0)
        let failures = Mutex<[String]>([])
        func peer(joinLate: Bool) {
            Task(executorPreference: ThreadPerJobExecutor.shared) { @Sendable in
                do {
                    // The late peer registers once both others have finished a step as a world of two.
                    let joinAfter = Date().addingTimeInterval(60)
                    while joinLate && worlds.withLock({ $0[2]?.count ?? 0 }) < 2 && Date() < joinAfter { usleep(2_000) }
                    let c = try Communicator(master: master.endpoint, configuration: configuration)
                    while !joinLate && c.worldSize < 2 { try c.updateTopology(minimumWorldSize: 2) }
                    var round = 0
                    let deadline = Date().addingTimeInterval(60)
                    // Train until everyone has trained in a world of three for a while.
                    while round < 40 && Date() < deadline {
                        if try Self.step(c, round: round) {
                            worlds.withLock { $0[c.worldSize, default: []].insert(Int(c.peerID)) }
                            round += c.worldSize == 3 ? 1 : 0
                        }
                    }
                    try c.leave()
                } catch {
                    failures.withLock { $0.append("\(error)") }
                }
                finished.signal()
            }
        }
        peer(joinLate: false)
        peer(joinLate: false)
        peer(joinLate: true)
        for _ in 0 ..< 3 { #expect(finished.wait(timeout: .now() + 120) == .success) }
        #expect(failures.withLock { $0 }.isEmpty, "\(failures.withLock { $0 })")
        let seen = worlds.withLock { $0 }
        #expect(seen[2]?.count == 2 && seen[3]?.count == 3, "trained as two, then as three: \(seen)")
    }

    @Test func aGracefulLeaveOnlyReformsTheRing() throws {
        let errors = Mutex<[ChorusError]>([])
        let finalWorlds = Mutex<[Int]>([])
        try GroupHarness.run(worldSize: 3) { c in
            let leaver = c.rank == 2
            var round = 0
            while round < 30 {
                if leaver && round == 10 {
                    try c.leave()
                    return
                }
                do {
                    if try Self.step(c, round: round) { round += 1 }
                } catch let error as ChorusError {
                    errors.withLock { $0.append(error) }
                    throw error
                }
            }
            finalWorlds.withLock { $0.append(c.worldSize) }
        }
        #expect(finalWorlds.withLock { $0 } == [2, 2])
        #expect(errors.withLock { $0 }.isEmpty)
    }
}
