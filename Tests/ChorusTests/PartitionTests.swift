import ChorusLauncher
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Members that reach the master but not each other, made real with network namespaces (these tests
/// need root, as CI has): three peer processes, each in its own namespace, and the master in the
/// root namespace, all routed through a router namespace. Cutting a link there (a blackhole rule
/// for the pair, both ways) drops its packets in the middle: neither end gets an error, only silence,
/// as on a real network. The master must evict one of the pair, naming it, and the other two must
/// make progress again.
@Suite(.serialized) struct PartitionTests {
    @Test(arguments: [true, false])
    func aCutLinkBetweenTwoPeersEndsWithOneEvictedAndTheOthersMakingProgress(bothWays: Bool) throws {
        let network = try RoutedNetwork(peers: 3)
        let environment = ProcessFaultTests.environment.merging(["CHORUS_CONNECT_TIMEOUT_MS": "3000"]) { $1 }
        let (master, endpoint) = try network.startMaster(environment: environment)
        defer { master.signal(SIGKILL) }
        let peers = try (0 ..< 3).map { index in
            try network.startPeer(index, arguments: ["--master", endpoint, "--world", "3", "--count", "131072", "--rounds", "1000000"],
                                  environment: environment)
        }
        defer { peers.forEach { $0.signal(SIGKILL) } }
        #expect(ProcessFaultTests.waitForRound(3, peers), "the three peers never ran")

        // 512 KiB all-reduces take the ring, and in a ring of three every pair is adjacent, so the cut
        // link carries data. (A cut between members that no collective uses is found only when the
        // next ring forms: every pair connects then.)
        try network.cut(1, 2, bothWays: bothWays)
        let cut = monotonicMilliseconds()
        // Progress: a correct round in a world of two at both survivors. Who survives is the master's
        // choice; the evicted one exits naming the pair.
        var evicted: Int?
        var progressed: Set<Int> = []
        while monotonicMilliseconds() - cut < 40_000 && (evicted == nil || progressed.count < 2) {
            for (index, peer) in peers.enumerated() {
                let lines = ProcessFaultTests.lines(peer.outputSoFar(waitMilliseconds: 20))
                if lines.contains(where: { $0.kind == "FATAL" || ($0.kind == "ABORT" && $0.fields["retryable"] == "false") }) { evicted = index }
                let afterCut = lines.drop { !($0.kind == "ABORT" || $0.kind == "REFORM-FAILED") }
                if afterCut.contains(where: { $0.kind == "OK" && $0.fields["world"] == "2" }) { progressed.insert(index) }
            }
        }
        let elapsed = monotonicMilliseconds() - cut
        print("partition (\(bothWays ? "both ways" : "one way")): from the cut to both survivors' first correct round in a world of two: \(elapsed) ms")
        if evicted == nil {
            for (index, peer) in peers.enumerated() { print("peer process \(index):\n\(peer.outputSoFar(waitMilliseconds: 20).suffix(3000))") }
            print("master:\n\(master.outputSoFar(waitMilliseconds: 20).suffix(3000))")
        }
        let victim = try #require(evicted, "nobody was evicted within 90 s of the cut")
        #expect([1, 2].contains(victim), "the evicted peer must be one end of the cut link, not peer \(victim)")
        let victimOutput = peers[victim].output(timeoutMilliseconds: 5_000)
        #expect(victimOutput.contains("evicted") && victimOutput.contains("could not connect"), "\(victimOutput.suffix(600))")
        let survivors = Set(0 ..< 3).subtracting([victim])
        #expect(progressed == survivors, "survivors with a correct round in a world of two: \(progressed)")
        for index in survivors {
            let lines = ProcessFaultTests.lines(peers[index].outputSoFar(waitMilliseconds: 20))
            #expect(lines.filter { $0.kind == "OK" }.allSatisfy { $0.fields["correct"] == "true" })
            #expect(!lines.contains { $0.kind == "FATAL" })
        }
    }

    /// A pair commits in one hop (each member's token goes ahead of its data): cut one way between
    /// the rounds, the member whose sends still arrive commits the next round, and the other, which
    /// never gets its partner's data, is evicted, its input restored; no survivor sees another
    /// outcome, and the one left goes on alone.
    @Test func aPairCutOneWayEndsWithTheMemberThatCommittedGoingOnAndTheOtherEvicted() throws {
        let network = try RoutedNetwork(peers: 2)
        let (master, endpoint) = try network.startMaster(environment: ProcessFaultTests.environment)
        defer { master.signal(SIGKILL) }
        // 4 KiB rounds (recursive doubling) 100 ms apart: the cut falls between two rounds.
        let peers = try (0 ..< 2).map { index in
            try network.startPeer(index, arguments: ["--master", endpoint, "--world", "2", "--count", "1024", "--rounds", "1000000",
                                                     "--gap-ms", "100"],
                                  environment: ProcessFaultTests.environment)
        }
        defer { peers.forEach { $0.signal(SIGKILL) } }
        #expect(ProcessFaultTests.waitForRound(3, peers), "the two peers never ran")

        try network.cut(0, 1, bothWays: false) // peer 0's frames no longer reach peer 1
        let cut = monotonicMilliseconds()
        var evictedRound: String?
        var aloneAfterwards = false
        while monotonicMilliseconds() - cut < 40_000 && (evictedRound == nil || !aloneAfterwards) {
            let second = ProcessFaultTests.lines(peers[1].outputSoFar(waitMilliseconds: 20))
            evictedRound = second.last { $0.kind == "ABORT" && $0.fields["retryable"] == "false" }?.fields["round"]
            aloneAfterwards = ProcessFaultTests.lines(peers[0].outputSoFar(waitMilliseconds: 20))
                .contains { $0.kind == "OK" && $0.fields["world"] == "1" }
        }
        print("pair cut one way: from the cut to peer 0's first round alone: \(monotonicMilliseconds() - cut) ms")
        let round = try #require(evictedRound, "peer 1 was not evicted: \(peers[1].outputSoFar(waitMilliseconds: 20).suffix(1500))")
        let evictedOutput = peers[1].output(timeoutMilliseconds: 5_000)
        #expect(ProcessFaultTests.lines(evictedOutput).filter { $0.kind == "OK" }.allSatisfy { $0.fields["correct"] == "true" })
        #expect(evictedOutput.contains("committed operation") && evictedOutput.contains("could not finish"), "\(evictedOutput.suffix(800))")
        #expect(evictedOutput.contains("ABORT round=\(round) ") && evictedOutput.contains("restored=true"))
        #expect(aloneAfterwards, "peer 0 never ran alone: \(peers[0].outputSoFar(waitMilliseconds: 20).suffix(1500))")
        // Peer 0 committed the round peer 1 could not finish, in a world of two, and every result is right.
        let first = ProcessFaultTests.lines(peers[0].outputSoFar(waitMilliseconds: 20))
        #expect(first.contains { $0.kind == "OK" && $0.fields["round"] == round && $0.fields["world"] == "2" })
        #expect(first.filter { $0.kind == "OK" }.allSatisfy { $0.fields["correct"] == "true" })
        #expect(!first.contains { $0.kind == "FATAL" || ($0.kind == "ABORT" && $0.fields["retryable"] == "false") })
        // No split: a round one member aborted and stayed in the group for was committed by neither.
        let succeeded = Set(first.filter { $0.kind == "OK" }.map { "\($0.fields["epoch"] ?? "") \($0.fields["round"] ?? "")" })
        let split = ProcessFaultTests.lines(evictedOutput).filter { $0.kind == "ABORT" && $0.fields["retryable"] == "true" }
            .filter { succeeded.contains("\($0.fields["epoch"] ?? "") \($0.fields["round"] ?? "")") }
        #expect(split.isEmpty, "rounds peer 0 committed and peer 1 aborted as a survivor: \(split.map(\.fields))")
    }

    /// A pair member stopped just before its call, once its partner's token and data (sent at the
    /// partner's call) are in its socket, and then cut off from everyone (so the master's close and
    /// the partner's teardown do not reach it), until the master has declared it lost and aborted
    /// the call for its partner. Resumed, it finishes its data phase from its socket and hears no
    /// word of the abort, yet it must not commit what its partner saw aborted (DESIGN.md, "A pair
    /// commits in one hop": no one-hop commit by a member held up or out of touch with the master
    /// lately). Reconnected to the master, it learns that it was evicted; the partner's abort is the
    /// one outcome, and it trains on alone.
    @Test func aPairMemberLostToTheMasterNeverSucceedsAtWhatItsPartnerSawAborted() throws {
        let network = try RoutedNetwork(peers: 2)
        let (master, endpoint) = try network.startMaster(environment: ProcessFaultTests.environment)
        defer { master.signal(SIGKILL) }
        let peers = try (0 ..< 2).map { index in
            try network.startPeer(index, arguments: ["--master", endpoint, "--world", "2", "--count", "1024", "--rounds", "200"]
                                      + (index == 1 ? ["--stop-before-round", "2"] : []),
                                  environment: ProcessFaultTests.environment)
        }
        defer { peers.forEach { $0.signal(SIGKILL) } }
        #expect(ProcessFaultTests.waitUntilStopped(peers[1]), "peer 1 never stopped")
        usleep(100_000) // peer 0's call, and its token and data, follow within a millisecond
        try network.cutFromMaster(1)
        try network.cut(0, 1, bothWays: true)
        #expect(ProcessFaultTests.millisecondsUntil("ABORT round=2", in: [peers[0]], matching: "lost") != nil,
                "peer 0 never saw round 2 aborted: \(peers[0].outputSoFar(waitMilliseconds: 20).suffix(1500))")
        peers[1].signal(SIGCONT)
        usleep(500_000) // its call decides meanwhile, without a word from the master
        try network.reconnectToMaster(1)
        let code = peers[1].waitForExit(timeoutMilliseconds: 60_000)
        let output = peers[1].output(timeoutMilliseconds: 2_000)
        #expect(!ProcessFaultTests.lines(output).contains { $0.kind == "OK" && $0.fields["round"] == "2" },
                "the resumed member succeeded at the operation its partner saw aborted:\n\(output)")
        #expect(code == 3 || code == 2, "the resumed member must fail, not hang or succeed: \(String(describing: code))\n\(output)")
        #expect(output.contains("evicted"), "it learns that it was evicted:\n\(output)")
        ProcessFaultTests.checkRecovery(survivors: [peers[0]], expectedWorld: 1)
    }
}
