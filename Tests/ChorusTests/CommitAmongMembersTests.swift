import Chorus
import ChorusLauncher
import Foundation
import Synchronization
import Testing

/// Success without the master (DESIGN.md): members that all finished a collective commit it among
/// themselves, so the master is not on its path. Part of the serialized `ProcessFaultTests`: the
/// master is a process of its own, stopped with SIGSTOP.
extension ProcessFaultTests {
    /// Three members (threads, real sockets) run every kind of collective while their master is
    /// stopped: each succeeds with the exact result, compared bitwise with a sequential reference.
    /// Once the master runs again the group goes on in the same epoch.
    @Test func collectivesSucceedWhileTheMasterIsStopped() throws {
        let (master, endpoint) = try Self.startMaster()
        defer { master.signal(SIGKILL) }
        // 4 collectives a round: 24 stay within the 32 a member may run ahead of the master's verdicts.
        let world = 3, rounds = 6, count = 1024
        let stopped = Mutex(false), finishedWhileStopped = Mutex(0), resumed = Mutex(false)
        try GroupHarness.run(master: endpoint, worldSize: world) { c in
            try c.barrier()
            if c.rank == 0 {
                master.signal(SIGSTOP)
                stopped.withLock { $0 = true }
            }
            Self.waitUntil { stopped.withLock { $0 } }
            let epoch = c.epoch
            for round in 0 ..< rounds {
                let inputs = (0 ..< world).map { rank in (0 ..< count).map { Float(rank * 1_000_000 + round * 10_000 + $0) } }
                let sum = try c.allReduce(inputs[c.rank])
                #expect(sum == (0 ..< count).map { i in inputs.reduce(Float(0)) { $0 + $1[i] } }, "rank \(c.rank) round \(round)")
                var broadcast = inputs[c.rank]
                try c.broadcast(&broadcast, root: round % world)
                #expect(broadcast == inputs[round % world], "rank \(c.rank) round \(round)")
                let gathered = try c.allGather(Array(inputs[c.rank].prefix(16)))
                #expect(gathered == inputs.flatMap { $0.prefix(16) }, "rank \(c.rank) round \(round)")
                try c.barrier()
            }
            #expect(c.epoch == epoch)
            finishedWhileStopped.withLock { $0 += 1 }
            if c.rank == 0 {
                Self.waitUntil { finishedWhileStopped.withLock { $0 } == world }
                #expect(Self.isStopped(master), "the master ran during the collectives")
                master.signal(SIGCONT)
                resumed.withLock { $0 = true }
            }
            Self.waitUntil { resumed.withLock { $0 } }
            let after = try c.allReduce([Float(c.rank + 1)])
            #expect(after == [6] && c.epoch == epoch, "rank \(c.rank) after the master resumed")
        }
    }

    /// Many more collectives in one epoch than members may run ahead of the master's verdicts:
    /// their `committed` words reach it (sent for later, flushed halfway), so nobody waits for it,
    /// and every result is exact.
    @Test func aLongRunOfCollectivesKeepsTheMastersVerdictsComing() throws {
        var configuration = GroupHarness.testConfiguration()
        configuration.operationTimeout = .seconds(10)
        try GroupHarness.run(worldSize: 3, configuration: configuration) { c in
            let epoch = c.epoch
            for round in 0 ..< 200 {
                let sum = try c.allReduce((0 ..< 16).map { Float(c.rank * 100_000 + round * 100 + $0) })
                #expect(sum == (0 ..< 16).map { Float(300_000 + 3 * (round * 100 + $0)) }, "rank \(c.rank) round \(round)")
            }
            #expect(c.epoch == epoch)
        }
    }

    /// Members that commit among themselves write to the master about once per half window of
    /// collectives (`PeerStateMachine.flushesCommitted`), not once per collective: 400 all-reduces
    /// of 2 members (a window of 32) may cost the master at most one message per member every
    /// 8 collectives.
    @Test func membersCommittingAmongThemselvesWriteToTheMasterOncePerHalfWindow() throws {
        // A heartbeat also carries a queued `committed`: rare enough here however slow the machine.
        var configuration = GroupHarness.testConfiguration()
        configuration.heartbeatInterval = .seconds(3)
        configuration.peerTimeout = .seconds(30)
        let master = try Master(host: "127.0.0.1", port: 0, configuration: configuration)
        defer { master.shutdown() }
        let counts = Mutex<[UInt64]>([])
        try GroupHarness.run(master: master.endpoint, worldSize: 2, configuration: configuration) { c in
            try c.barrier()
            if c.rank == 0 { counts.withLock { $0.append(master.messagesHandled) } }
            for round in 0 ..< 400 {
                let sum = try c.allReduce((0 ..< 16).map { Float(c.rank * 100_000 + round * 100 + $0) })
                #expect(sum == (0 ..< 16).map { Float(100_000 + 2 * (round * 100 + $0)) }, "rank \(c.rank) round \(round)")
            }
            try c.barrier()
            if c.rank == 0 { counts.withLock { $0.append(master.messagesHandled) } }
        }
        let seen = counts.withLock { $0 }
        #expect(seen.count == 2)
        if seen.count == 2 { #expect(seen[1] - seen[0] <= 2 * 400 / 8, "the master handled \(seen[1] - seen[0]) messages for 401 collectives") }
    }

    /// Polls `condition` every millisecond, for at most 20 s.
    static func waitUntil(_ condition: () -> Bool) {
        let deadline = ContinuousClock.now + .seconds(20)
        while !condition() && ContinuousClock.now < deadline { usleep(1000) }
    }

    /// True while `process` is stopped (state T in /proc).
    static func isStopped(_ process: ChildProcess) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(process.pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        return stat[stat.index(close, offsetBy: 2)] == "T"
    }
}
