import ChorusLauncher
#if canImport(Glibc)
import Glibc
#endif

/// Peers in network namespaces of their own, routed through a router namespace (these tests need
/// root, as CI has), and the master in the root namespace. At the router a link between two peers
/// can be cut (its packets dropped in the middle: neither end gets an error, only silence, as on a
/// real network) or slowed (a rate limit for that pair only, both ways).
///
/// Link i (0: the root namespace, i >= 1: peer i-1) is 10.S.i.0/24: the router holds 10.S.i.1,
/// the other end 10.S.i.2.
final class RoutedNetwork {
    let tag: String
    let subnet: Int
    private(set) var namespaces: [String] = []
    /// Peers whose router link has its htb root (see `slow`).
    private var shaped: Set<Int> = []
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

    /// `chorus-master` in the root namespace on the master's address, and its endpoint.
    func startMaster(environment: [String: String]) throws -> (ChildProcess, String) {
        let master = try ChildProcess(executable: ProcessFaultTests.binaries + "/chorus-master",
                                      arguments: ["--host", masterAddress, "--port", "0", "--log-level", "warning"],
                                      environment: environment, captureOutput: true)
        guard let endpoint = ProcessFaultTests.endpoint(of: master) else {
            master.signal(SIGKILL)
            throw Failure(description: "chorus-master printed no endpoint")
        }
        return (master, endpoint)
    }

    /// `chorus-test-peer` in peer `index`'s namespace, listening on its address.
    func startPeer(_ index: Int, arguments: [String], environment: [String: String]) throws -> ChildProcess {
        try ChildProcess(executable: "/usr/sbin/ip",
                         arguments: ["netns", "exec", namespaces[index], ProcessFaultTests.binaries + "/chorus-test-peer"] + arguments,
                         environment: environment.merging(["CHORUS_BIND": address(index)]) { $1 }, captureOutput: true)
    }

    /// Drops everything from peer `a` to peer `b` at the router, and back too when `bothWays`.
    func cut(_ a: Int, _ b: Int, bothWays: Bool) throws {
        try Self.ip("-n \(router) rule add from \(address(a)) to \(address(b)) blackhole")
        if bothWays { try Self.ip("-n \(router) rule add from \(address(b)) to \(address(a)) blackhole") }
    }

    /// Drops everything between peer `index` and the master at the router, both ways.
    func cutFromMaster(_ index: Int) throws {
        for rule in masterRules(index) { try Self.ip("-n \(router) rule add \(rule) blackhole") }
    }

    /// Lets peer `index` and the master reach each other again (after `cutFromMaster`).
    func reconnectToMaster(_ index: Int) throws {
        for rule in masterRules(index) { try Self.ip("-n \(router) rule del \(rule) blackhole") }
    }

    private func masterRules(_ index: Int) -> [String] {
        ["from \(address(index)) to \(masterAddress)", "from \(masterAddress) to \(address(index))"]
    }

    /// Limits what moves between peers `a` and `b` to `megabitsPerSecond` each way, at the
    /// router's links towards each of them (an htb class for the other's address; everything else
    /// passes at 10 Gbit/s).
    func slow(_ a: Int, _ b: Int, megabitsPerSecond: Int) throws {
        for (from, to) in [(a, b), (b, a)] {
            let device = "ch\(tag)r\(to + 1)"
            if shaped.insert(to).inserted {
                try Self.tc("-n \(router) qdisc add dev \(device) root handle 1: htb default 1")
                try Self.tc("-n \(router) class add dev \(device) parent 1: classid 1:1 htb rate 10gbit")
            }
            let classID = "1:\(from + 10)"
            try Self.tc("-n \(router) class add dev \(device) parent 1: classid \(classID) htb rate \(megabitsPerSecond)mbit")
            try Self.tc("-n \(router) filter add dev \(device) parent 1: protocol ip prio 1 u32 match ip src \(address(from))/32 flowid \(classID)")
        }
    }

    deinit {
        for name in namespaces + [router] { _ = try? Self.ip("netns del \(name)") } // takes the veths with them
        _ = try? Self.ip("link del \(rootLink)")
    }

    struct Failure: Error, CustomStringConvertible { let description: String }

    static func ip(_ arguments: String) throws { try run("ip " + arguments) }
    static func tc(_ arguments: String) throws { try run("tc " + arguments) }

    private static func run(_ command: String) throws {
        let command = command + " 2>&1"
        guard let pipe = popen(command, "r") else { throw Failure(description: "cannot run \(command)") }
        var output = ""
        var buffer = [CChar](repeating: 0, count: 512)
        while fgets(&buffer, 512, pipe) != nil {
            output += String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        let status = pclose(pipe)
        guard status == 0 else { throw Failure(description: "\(command) failed (\(status)): \(output)") }
    }
}
