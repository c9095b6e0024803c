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
    /// Link i (0: the root namespace, i >= 1: peer i-1) is 10.S.i.0/24: the router holds 10.S.i.1,
    /// the other end 10.S.i.2.
    final class Network {
        let tag: String
        let subnet: Int
        private(set) var namespaces: [String] = []
        private var router: String { "chorus\(tag)r" }
        private var rootLink: String { "ch\(tag)m" }
        var masterAddress: String { "10.\(subnet).0.2" }

        init(peers: Int) throws {
            tag = String(UInt32.random(in: 0 ..< 1 << 20), radix: 36)
            subnet = Int.random(in: 100 ..< 250)
            try Self.ip("netns add \(router)")
            try Self.ip("netns exec \(router) sysctl -qw net.ipv4.ip_forward=1") // this namespace only
            try Self.ip("link add \(rootLink) type veth peer name ch\(tag)r0")
            try Self.ip("link set ch\(tag)r0 netns \(router)")
            try Self.ip("-n \(router) addr add 10.\(subnet).0.1/24 dev ch\(tag)r0")
            try Self.ip("-n \(router) link set ch\(tag)r0 up")
            try Self.ip("addr add \(masterAddress)/24 dev \(rootLink)")
            try Self.ip("link set \(rootLink) up")
            try Self.ip("route add 10.\(subnet).0.0/16 via 10.\(subnet).0.1") // goes with the link
            for index in 0 ..< peers {
                let name = "chorus\(tag)p\(index)", link = index + 1
                try Self.ip("netns add \(name)")
                namespaces.append(name)
                try Self.ip("link add ch\(tag)r\(link) type veth peer name ch\(tag)p\(link)")
                try Self.ip("link set ch\(tag)r\(link) netns \(router)")
                try Self.ip("link set ch\(tag)p\(link) netns \(name)")
                try Self.ip("-n \(router) addr add 10.\(subnet).\(link).1/24 dev ch\(tag)r\(link)")
                try Self.ip("-n \(router) link set ch\(tag)r\(link) up")
                try Self.ip("-n \(name) addr add \(address(index))/24 dev ch\(tag)p\(link)")
                try Self.ip("-n \(name) link set ch\(tag)p\(link) up")
                try Self.ip("-n \(name) link set lo up")
                try Self.ip("-n \(name) route add default via 10.\(subnet).\(link).1")
            }
        }

        func address(_ index: Int) -> String { "10.\(subnet).\(index + 1).2" }

        /// Drops everything from peer `a` to peer `b` at the router, and back too when `bothWays`.
        func cut(_ a: Int, _ b: Int, bothWays: Bool) throws {
            try Self.ip("-n \(router) rule add from \(address(a)) to \(address(b)) blackhole")
            if bothWays { try Self.ip("-n \(router) rule add from \(address(b)) to \(address(a)) blackhole") }
        }

        deinit {
            for name in namespaces + [router] { _ = try? Self.ip("netns del \(name)") } // takes the veths with them
            _ = try? Self.ip("link del \(rootLink)")
        }

        struct Failure: Error, CustomStringConvertible { let description: String }

        static func ip(_ arguments: String) throws {
            let command = "ip " + arguments + " 2>&1"
            guard let pipe = popen(command, "r") else { throw Failure(description: "cannot run \(command)") }
            var output = ""
            var buffer = [CChar](repeating: 0, count: 512)
            while fgets(&buffer, 512, pipe) != nil { output += String(cString: buffer) }
            let status = pclose(pipe)
            guard status == 0 else { throw Failure(description: "\(command) failed (\(status)): \(output)") }
        }
    }

    @Test(arguments: [true, false])
    func aCutLinkBetweenTwoPeersEndsWithOneEvictedAndTheOthersMakingProgress(bothWays: Bool) throws {
        let network = try Network(peers: 3)
        let environment = ProcessFaultTests.environment.merging(["CHORUS_CONNECT_TIMEOUT_MS": "3000"]) { $1 }
        let master = try ChildProcess(executable: ProcessFaultTests.binaries + "/chorus-master",
                                      arguments: ["--host", network.masterAddress, "--port", "0", "--log-level", "warning"],
                                      environment: environment, captureOutput: true)
        defer { master.signal(SIGKILL) }
        let endpoint = try #require(ProcessFaultTests.endpoint(of: master))
        let peers = try (0 ..< 3).map { index in
            try ChildProcess(executable: "/usr/sbin/ip",
                             arguments: ["netns", "exec", network.namespaces[index], ProcessFaultTests.binaries + "/chorus-test-peer",
                                         "--master", endpoint, "--world", "3", "--count", "131072", "--rounds", "1000000"],
                             environment: environment.merging(["CHORUS_BIND": network.address(index)]) { $1 }, captureOutput: true)
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
}
