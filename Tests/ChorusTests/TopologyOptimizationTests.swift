import Chorus
import ChorusLauncher
import Foundation
import Synchronization
import Testing

/// `optimizeTopology()`: every member ends with the same ring, pairs measured once are not measured
/// again, calls that differ are a mismatch, a member lost while measuring aborts it for everyone
/// alike, and on links of unequal speed (network namespaces, a rate limit per pair) the new ring
/// leaves out the slow pairs that the join order put in it.
@Suite(.serialized) struct TopologyOptimizationTests {
    /// In-place sums of rank- and index-derived integers, exact in f32: the ring still computes.
    static func checkAllReduce(_ c: Communicator, round: Int) throws -> Bool {
        var values = (0 ..< 70_000).map { Float(c.rank * 3 + round + $0 % 17) }
        try c.allReduce(&values, op: .sum)
        let n = c.worldSize
        return values.indices.allSatisfy { values[$0] == Float(3 * n * (n - 1) / 2 + n * (round + $0 % 17)) }
    }

    @Test func everyMemberEndsWithTheSameRingAndKnownPairsAreNotMeasuredAgain() throws {
        let results = Mutex<[[TopologyOptimization]]>([])
        try GroupHarness.run(worldSize: 4) { c in
            let first = try c.optimizeTopology(measuringFor: .milliseconds(5))
            #expect(try Self.checkAllReduce(c, round: 1))
            let second = try c.optimizeTopology(measuringFor: .milliseconds(5))
            let third = try c.optimizeTopology(measuringFor: .milliseconds(5), remeasure: true)
            #expect(c.members == third.ring && c.worldSize == 4)
            #expect(try Self.checkAllReduce(c, round: 2))
            results.withLock { $0.append([first, second, third]) }
        }
        let all = results.withLock { $0 }
        #expect(all.count == 4)
        for call in 0 ..< 3 {
            #expect(Set(all.map { $0[call].ring }).count == 1, "call \(call): \(all.map { $0[call].ring })")
            #expect(Set(all[0][call].ring).count == 4)
        }
        #expect(all.allSatisfy { $0[0].measuredPairs == 3 && $0[1].measuredPairs == 0 && $0[2].measuredPairs == 3 })
        #expect(all.allSatisfy { $0[0].slowestLinkBefore > 0 && $0[1].slowestLinkAfter > 0 })
        // The second call knew every cost and re-formed in the order it solved the first time.
        #expect(all.allSatisfy { !$0[1].reordered && $0[1].ring == $0[0].ring })
    }

    /// With a shared secret: the pairs outside the epoch's pattern (1-4 and 0-3 of five, three
    /// apart) get links that authenticate before they count, and the measurement goes through.
    @Test func withASecretThePairsOutsideThePatternAuthenticateAndAreMeasured() throws {
        let rings = Mutex<[[PeerID]]>([])
        try GroupHarness.run(worldSize: 5, configuration: AuthenticationTests.configuration(secret: AuthenticationTests.secret)) { c in
            let result = try c.optimizeTopology(measuringFor: .milliseconds(5))
            #expect(result.measuredPairs == 4)
            #expect(try Self.checkAllReduce(c, round: 3))
            rings.withLock { $0.append(result.ring) }
        }
        let all = rings.withLock { $0 }
        #expect(all.count == 5 && Set(all).count == 1, "\(all)")
    }

    @Test func membersThatMeasureDifferentlyGetAMismatchNamingTheSetting() throws {
        let messages = Mutex<[String]>([])
        try GroupHarness.run(worldSize: 3) { c in
            #expect(throws: ChorusError.self) { try c.optimizeTopology(measuringFor: .zero) }
            do {
                try c.optimizeTopology(measuringFor: .milliseconds(c.rank == 1 ? 7 : 5))
                Issue.record("a mismatched optimizeTopology succeeded")
            } catch let error as ChorusError {
                #expect(!error.isRetryable)
                messages.withLock { $0.append("\(error)") }
            }
            try c.updateTopology()
            #expect(try Self.checkAllReduce(c, round: 0))
        }
        let all = messages.withLock { $0 }
        #expect(all.count == 3 && Set(all).count == 1, "\(all)")
        #expect(all.first?.contains("measuring differs") == true, "\(all)")
    }

    /// Four peer processes, one SIGKILLed as the links are measured: the three others get the
    /// same retryable abort, re-form, and compute correctly.
    @Test func aMemberLostWhileMeasuringAbortsItForEveryoneAlike() throws {
        let (master, endpoint) = try ProcessFaultTests.startMaster()
        defer { master.signal(SIGKILL) }
        let go = FileManager.default.temporaryDirectory.appendingPathComponent("chorus-go-\(UInt32.random(in: 0 ... .max))").path
        defer { unlink(go) }
        let peers = try ProcessFaultTests.startPeers(4, master: endpoint, rounds: 3, elements: 4096,
                                                     arguments: ["--optimize-topology", "--wait-for-file", go])
        defer { peers.forEach { $0.signal(SIGKILL) } }
        #expect(ProcessFaultTests.millisecondsUntil("READY", in: peers) != nil)
        _ = FileManager.default.createFile(atPath: go, contents: nil)
        usleep(20_000) // into the first rounds of measuring (several 64 MiB phases per pair on loopback)
        peers[3].signal(SIGKILL)
        let survivors = Array(peers[0 ..< 3])
        let outputs = survivors.map { $0.output(timeoutMilliseconds: 60_000) }
        let aborts = outputs.map { output in ProcessFaultTests.lines(output).first { $0.kind == "OPTIMIZE-ABORT" || $0.kind == "OPTIMIZED" } }
        #expect(aborts.allSatisfy { $0?.kind == "OPTIMIZE-ABORT" && $0?.fields["retryable"] == "true" }, "\(outputs)")
        #expect(Set(aborts.map { $0?.fields["error"] ?? "" }).count == 1, "\(outputs)")
        for output in outputs {
            let oks = ProcessFaultTests.lines(output).filter { $0.kind == "OK" }
            #expect(oks.count == 3 && oks.allSatisfy { $0.fields["correct"] == "true" && $0.fields["world"] == "3" }, "\(output)")
        }
    }

    /// Four peers, each in a network namespace of its own. Once they formed in join order, the
    /// test slows the two pairs that the ring joins first and third (ranks 0-1 and 2-3) to 40
    /// Mbit/s each way, everything else at 10 Gbit/s; `optimizeTopology()` must then give every
    /// member the same ring, one in which no slow pair are neighbours.
    @Test func onUnequalLinksTheNewRingLeavesOutTheSlowPairs() throws {
        let network = try RoutedNetwork(peers: 4)
        let (master, endpoint) = try network.startMaster(environment: ProcessFaultTests.environment)
        defer { master.signal(SIGKILL) }
        let go = FileManager.default.temporaryDirectory.appendingPathComponent("chorus-go-\(UInt32.random(in: 0 ... .max))").path
        defer { unlink(go) }
        let peers = try (0 ..< 4).map { index in
            try network.startPeer(index, arguments: ["--master", endpoint, "--world", "4", "--count", "65536", "--rounds", "3",
                                                     "--optimize-topology", "--wait-for-file", go],
                                  environment: ProcessFaultTests.environment)
        }
        defer { peers.forEach { $0.signal(SIGKILL) } }
        #expect(ProcessFaultTests.millisecondsUntil("READY", in: peers) != nil)
        // Which namespace holds which rank, and each rank's peer id.
        var namespaceOf: [Int: Int] = [:], idOf: [Int: String] = [:]
        for (index, peer) in peers.enumerated() {
            let ready = try #require(ProcessFaultTests.lines(peer.outputSoFar(waitMilliseconds: 10)).first { $0.kind == "READY" })
            let rank = try #require(ready.fields["rank"].flatMap { Int($0) })
            namespaceOf[rank] = index
            idOf[rank] = ready.fields["id"]
        }
        try network.slow(namespaceOf[0]!, namespaceOf[1]!, megabitsPerSecond: 40)
        try network.slow(namespaceOf[2]!, namespaceOf[3]!, megabitsPerSecond: 40)
        _ = FileManager.default.createFile(atPath: go, contents: nil)
        let outputs = peers.map { $0.output(timeoutMilliseconds: 120_000) }
        let optimized = outputs.map { ProcessFaultTests.lines($0).first { $0.kind == "OPTIMIZED" } }
        #expect(optimized.allSatisfy { $0 != nil }, "\(outputs)")
        let rings = Set(optimized.compactMap { $0?.fields["ring"] })
        #expect(rings.count == 1, "\(rings)")
        let ring = (rings.first ?? "").split(separator: ",").map(String.init)
        let slowPairs: [Set<String>] = [[idOf[0]!, idOf[1]!], [idOf[2]!, idOf[3]!]]
        #expect(ring.count == 4)
        for position in ring.indices {
            let pair: Set<String> = [ring[position], ring[(position + 1) % ring.count]]
            #expect(!slowPairs.contains(pair), "ring \(ring) joins the slow pair \(pair); \(optimized)")
        }
        #expect(optimized.allSatisfy { $0?.fields["reordered"] == "true" })
        print("unequal links: ring \(ring) (slow pairs \(slowPairs)); slowest link before/after (Mbit/s): "
              + "\(optimized.map { "\($0?.fields["before"] ?? "?")/\($0?.fields["after"] ?? "?")" })")
        for output in outputs {
            let oks = ProcessFaultTests.lines(output).filter { $0.kind == "OK" }
            #expect(oks.count == 3 && oks.allSatisfy { $0.fields["correct"] == "true" }, "\(output)")
        }
    }

    /// Each member dials its own number of connections to its right neighbour (here set by hand,
    /// as automatic lanes set them from measurements), and the neighbour takes what its hellos
    /// say: three peer processes dialing 1, 3 and 2 form one ring, hold the connections that
    /// makes, and every ring all-reduce (1 Mi elements, segments striped over the lanes) is exact.
    @Test func neighboursThatDialDifferentNumbersOfLanesFormOneRing() throws {
        let (master, endpoint) = try ProcessFaultTests.startMaster()
        defer { master.signal(SIGKILL) }
        let dialed = [1, 3, 2]
        let peers = try dialed.map { lanes in
            try ChildProcess(executable: ProcessFaultTests.binaries + "/chorus-test-peer",
                             arguments: ["--master", endpoint, "--world", "3", "--count", "1048576", "--rounds", "4"],
                             environment: ProcessFaultTests.environment.merging(["CHORUS_CONNECTIONS": "\(lanes)",
                                                                                 "CHORUS_RD_MAX_BYTES": "0"]) { $1 },
                             captureOutput: true)
        }
        defer { peers.forEach { $0.signal(SIGKILL) } }
        let outputs = peers.map { $0.output(timeoutMilliseconds: 120_000) }
        let ready = outputs.map { ProcessFaultTests.lines($0).first { $0.kind == "READY" } }
        let ranks = ready.map { $0?.fields["rank"].flatMap { Int($0) } ?? -1 }
        #expect(Set(ranks) == [0, 1, 2], "\(outputs)")
        for (index, line) in ready.enumerated() {
            // Its own lanes to the right, its left neighbour's, a mesh link to each (3 members: every
            // pair is a power of two apart), and the master.
            let left = ranks.firstIndex(of: (ranks[index] + 2) % 3) ?? index
            #expect(line?.fields["connections"] == "\(dialed[index] + dialed[left] + 2 + 1)", "\(outputs[index])")
        }
        for output in outputs {
            let oks = ProcessFaultTests.lines(output).filter { $0.kind == "OK" }
            #expect(oks.count == 4 && oks.allSatisfy { $0.fields["correct"] == "true" }, "\(output)")
        }
    }
}
