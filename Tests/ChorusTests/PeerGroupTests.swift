import Chorus
import ChorusLauncher
import ChorusTestSupport
import Dispatch
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Peer groups of one master: each has its own members, epochs, collectives and shared state.
@Suite(.serialized) struct PeerGroupTests {
    /// Group 0 of three and group 1 of two, as threads: every member sees only its group, the
    /// all-reduce sums its group's inputs, and a synchronization elects its group's state.
    @Test func twoGroupsKeepTheirOwnMembersCollectivesAndSharedState() throws {
        let master = try Master(host: "127.0.0.1", port: 0, configuration: GroupHarness.testConfiguration())
        defer { master.shutdown() }
        let problems = Mutex<[String]>([])
        @Sendable func check(_ ok: Bool, _ what: @autoclosure () -> String) { if !ok { problems.withLock { $0.append(what()) } } }
        let sizes: [UInt32: Int] = [0: 3, 1: 2]
        let count = 1000
        @Sendable func runGroup(_ group: UInt32) throws {
            var configuration = GroupHarness.testConfiguration()
            configuration.peerGroup = group
            let n = sizes[group]!
            try GroupHarness.run(master: master.endpoint, worldSize: n, configuration: configuration) { c in
                check(c.peerGroup == group && c.worldSize == n, "group \(group): world \(c.worldSize), peer group \(c.peerGroup)")
                // The master's status lists the group with its own epoch (published before the topology went out).
                let seen = master.currentStatus.peerGroups[group]
                check(seen?.worldSize == n && seen?.epoch == c.epoch, "group \(group): the master shows \(String(describing: seen)), the member epoch \(c.epoch)")
                // Inputs distinct per group, rank and index.
                let inputs = (0 ..< n).map { TestInputs.make(rank: Int(group) * 16 + $0, count: count, dataType: .float32, op: .sum) }
                var reduced = inputs[c.rank]
                try reduced.withUnsafeMutableBytes { try c.allReduce(inPlace: $0, count: count, dataType: .float32, op: .sum, algorithm: .ring) }
                check(reduced == ReferenceReduction.ringAllReduce(inputs, count: count, dataType: .float32, op: .sum),
                      "group \(group) rank \(c.rank): the all-reduce is not its group's sum")
                // Each group elects its own version; its last rank drifted.
                let version = c.rank == n - 1 ? 9 : Int(group) + 1
                let state = try SharedStateTests.makeState(version: version, revision: 3, statistics: c.rank)
                let result = try c.synchronize(state)
                check(result.wasOutdated == (c.rank == n - 1), "group \(group) rank \(c.rank): outdated \(result.wasOutdated)")
                check(SharedStateTests.holds(state, version: Int(group) + 1, statistics: c.rank),
                      "group \(group) rank \(c.rank) does not hold its group's state")
                try c.barrier()
            }
        }
        let other = DispatchSemaphore(value: 0)
        let otherError = Mutex<String?>(nil)
        DispatchQueue.global().async {
            do { try runGroup(1) } catch { otherError.withLock { $0 = "\(error)" } }
            other.signal()
        }
        try runGroup(0)
        #expect(other.wait(timeout: .now() + 300) == .success)
        #expect(otherError.withLock { $0 } == nil)
        #expect(problems.withLock { $0 } == [])
        // Their members gone, the groups go too (nothing is kept per group number).
        let deadline = ContinuousClock.now + .seconds(10)
        while !master.currentStatus.peerGroups.isEmpty && ContinuousClock.now < deadline { usleep(10_000) }
        #expect(master.currentStatus.peerGroups.isEmpty, "\(master.currentStatus.peerGroups)")
    }
}

extension ProcessFaultTests {
    /// A member of peer group 1 is SIGKILLed while group 0 trains beside it: group 1 gets one
    /// verdict and re-forms without it; group 0 never sees an abort or a new epoch.
    @Test func aMemberLostInOneGroupLeavesTheOtherGroupRunning() throws {
        let master = try Master(host: "127.0.0.1", port: 0)
        defer { master.shutdown() }
        let steady = try Self.startPeers(2, master: master.endpoint, rounds: 150, elements: 1 << 14, arguments: ["--gap-ms", "20"])
        let struck = try Self.startPeers(3, master: master.endpoint, rounds: 8, elements: 1 << 21, extraEnvironment: ["CHORUS_PEER_GROUP": "1"])
        #expect(Self.waitForRound(1, struck) && Self.waitForRound(1, steady))
        struck[2].signal(SIGKILL)
        #expect(struck[2].waitForExit(timeoutMilliseconds: 10_000) == 128 + SIGKILL)
        let survivors = Array(struck[0 ..< 2])
        #expect(Self.millisecondsUntil("TOPOLOGY", in: survivors, matching: "world=2") != nil, "group 1 did not re-form")
        #expect(steady.allSatisfy { $0.waitForExit(timeoutMilliseconds: 0) == nil }, "group 0 finished before group 1 re-formed: nothing overlapped")
        Self.checkRecovery(survivors: survivors, expectedWorld: 2)
        for peer in steady {
            let code = peer.waitForExit(timeoutMilliseconds: 120_000)
            let output = peer.output(timeoutMilliseconds: 2_000)
            let parsed = Self.lines(output)
            let oks = parsed.filter { $0.kind == "OK" }
            #expect(code == 0 && oks.count == 150 && parsed.last?.kind == "DONE", "\(output.suffix(2_000))")
            #expect(!parsed.contains { $0.kind == "ABORT" || $0.kind == "TOPOLOGY" }, "group 0 was touched:\n\(output.suffix(2_000))")
            #expect(oks.allSatisfy { $0.fields["correct"] == "true" && $0.fields["world"] == "2" }, "\(output.suffix(2_000))")
            #expect(Set(oks.compactMap { $0.fields["epoch"] }).count == 1, "group 0 changed epochs")
        }
    }
}
