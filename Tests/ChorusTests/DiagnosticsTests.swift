import Chorus
import Logging
import Synchronization
import Testing

/// What a user sees when something is wrong or needs watching: bind and connect errors with the
/// system's reason, the peer port range, and log lines that name the process that wrote them.
@Suite(.serialized) struct DiagnosticsTests {
    @Test func aPortInUseAndAnUnreachableMasterNameTheCallAndTheReason() throws {
        let first = try Master(host: "127.0.0.1", port: 0)
        defer { first.shutdown() }
        do {
            _ = try Master(host: "127.0.0.1", port: first.port)
            Issue.record("a second master bound the same port")
        } catch let error as ChorusError {
            #expect("\(error)".contains("bind 127.0.0.1:\(first.port): Address already in use"), "\(error)")
        }
        do {
            _ = try Master(host: "no-such-host.invalid", port: 0)
            Issue.record("a master bound an unresolvable host")
        } catch let error as ChorusError {
            #expect("\(error)".contains("getaddrinfo no-such-host.invalid: "), "\(error)")
        }
        var configuration = GroupHarness.testConfiguration()
        configuration.connectTimeout = .seconds(2)
        do {
            _ = try Communicator(master: "127.0.0.1:1", configuration: configuration)
            Issue.record("connected to a port nobody listens on")
        } catch let error as ChorusError {
            #expect(error == .masterUnreachable("127.0.0.1:1: could not connect: connect 127.0.0.1:1: Connection refused"), "\(error)")
        }
    }

    @Test func peersListenInsideTheConfiguredPortRange() throws {
        // A free block of ports: bind a master on an ephemeral port and use the ports just above it.
        let probe = try Master(host: "127.0.0.1", port: 0)
        let low = probe.port &+ 1
        probe.shutdown()
        var configuration = GroupHarness.testConfiguration()
        configuration.peerPorts = low ... low + 20
        let seen = Mutex<[Int]>([])
        try GroupHarness.run(worldSize: 3, configuration: configuration) { c in
            var values = [Int64(c.rank), 1]
            try c.allReduce(&values)
            #expect(values == [3, 3])
            seen.withLock { $0.append(Int(c.listenAddress.split(separator: ":").last!)!) }
        }
        let ports = seen.withLock { $0 }
        #expect(ports.count == 3 && Set(ports).count == 3 && ports.allSatisfy { (Int(low) ... Int(low) + 20).contains($0) }, "\(ports)")
        #expect(try Configuration.fromEnvironment(["CHORUS_PEER_PORTS": "40000-40099"]).peerPorts == 40000 ... 40099)
        #expect(try Configuration.fromEnvironment(["CHORUS_PEER_PORTS": "41000"]).peerPorts == 41000 ... 41000)
        for bad in ["40099-40000", "0-10", "40000-", "ports"] {
            #expect(throws: ChorusError.self, "\(bad)") { try Configuration.fromEnvironment(["CHORUS_PEER_PORTS": bad]) }
        }
        #expect(try Configuration.fromEnvironment(["CHORUS_LOG_LEVEL": "debug"]).logger.logLevel == .debug)
        #expect(throws: ChorusError.self) { try Configuration.fromEnvironment(["CHORUS_LOG_LEVEL": "loud"]) }
    }

    /// Settings that cannot work, or that would quietly switch a safeguard off (a peer timeout of 0
    /// once turned hang detection off), are refused by name and value, from the environment and
    /// from code, before anything is bound or dialled.
    @Test func badSettingsAreRefusedNamingTheSettingAndTheValue() throws {
        func refusal(_ environment: [String: String]) -> String? {
            do {
                _ = try Configuration.fromEnvironment(environment)
                return nil
            } catch {
                return "\(error)"
            }
        }
        #expect(refusal(["CHORUS_PEER_TIMEOUT_MS": "0"]) == "invalid argument: peerTimeout (CHORUS_PEER_TIMEOUT_MS) is 0.0 seconds, it must be positive")
        #expect(refusal(["CHORUS_HEARTBEAT_MS": "0"]) == "invalid argument: heartbeatInterval (CHORUS_HEARTBEAT_MS) is 0.0 seconds, it must be positive")
        #expect(refusal(["CHORUS_HEARTBEAT_MS": "5000"])?.contains("not shorter than peerTimeout (CHORUS_PEER_TIMEOUT_MS) 5.0 seconds") == true)
        #expect(refusal(["CHORUS_CONNECTIONS": "65"]) == "invalid argument: connectionsPerPeer (CHORUS_CONNECTIONS) is 65, outside 0...64")
        #expect(refusal(["CHORUS_SEGMENT_BYTES": "0"]) == "invalid argument: segmentBytes (CHORUS_SEGMENT_BYTES) is 0, outside 1...2147483647")
        #expect(refusal(["CHORUS_SYNC_CHUNKS_IN_FLIGHT": "0"])?.contains("syncChunksInFlight") == true)
        #expect(refusal(["CHORUS_PEER_TIMEOUT_MS": "2000", "CHORUS_HEARTBEAT_MS": "200"]) == nil)

        var configuration = Configuration()
        configuration.peerTimeout = .milliseconds(-1)
        let master = try Master(host: "127.0.0.1", port: 0)
        defer { master.shutdown() }
        #expect(throws: ChorusError.invalidArgument("peerTimeout (CHORUS_PEER_TIMEOUT_MS) is -0.001 seconds, it must be positive")) {
            try Communicator(master: master.endpoint, configuration: configuration)
        }
        #expect(master.currentStatus.worldSize == 0, "the refused peer never registered")
        #expect(throws: ChorusError.self) { try Master(host: "127.0.0.1", port: 0, configuration: configuration) }
    }

    /// Every line says who wrote it: the master as `role=master`, a peer by pid and, once admitted,
    /// its peer id, rank and epoch (also on the abort it logs).
    @Test func everyLogLineCarriesTheWritersIdentity() throws {
        let lines = LineStore()
        var configuration = GroupHarness.testConfiguration()
        configuration.logger = Logger(label: "chorus") { _ in CapturingHandler(lines: lines) }
        configuration.logger.logLevel = .info
        try GroupHarness.run(worldSize: 2, configuration: configuration) { c in
            do {
                _ = try c.allReduce([Float](repeating: 1, count: 4 + c.rank)) // a mismatch: both log the abort
            } catch {}
        }
        let captured = lines.all
        let master = captured.filter { $0.metadata["role"] == "master" }
        let peers = captured.filter { $0.metadata["role"] == nil }
        #expect(master.contains { $0.message.contains("epoch 1 formed") || $0.message.contains("epoch 2 formed") }, "\(master)")
        #expect(master.contains { $0.message.contains("registered (listening on 127.0.0.1:") }, "\(master)")
        #expect(!captured.contains { $0.message.contains("conn#") }, "no internal connection numbers in logs")
        #expect(captured.allSatisfy { $0.metadata["pid"] != nil }, "\(captured)")
        let aborts = peers.filter { $0.level == .warning && $0.message.contains("aborted: ") }
        #expect(aborts.count == 2, "\(peers)")
        #expect(aborts.allSatisfy { line in ["peer", "rank", "epoch"].allSatisfy { line.metadata[$0] != nil } }, "\(aborts)")
        #expect(Set(aborts.compactMap { $0.metadata["rank"] }) == ["0", "1"], "\(aborts)")
    }
}

struct CapturedLine: Sendable, CustomStringConvertible {
    let level: Logger.Level
    let message: String
    let metadata: [String: String]
    var description: String { "\(level) \(metadata) \(message)" }
}

/// Keeps every line in memory, with the metadata the logger carried.
final class LineStore: Sendable {
    private let lines = Mutex<[CapturedLine]>([])
    func append(_ line: CapturedLine) { lines.withLock { $0.append(line) } }
    var all: [CapturedLine] { lines.withLock { $0 } }
}

struct CapturingHandler: LogHandler {
    let lines: LineStore
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(level: Logger.Level, message: Logger.Message, metadata explicit: Logger.Metadata?, source: String,
             file: String, function: String, line: UInt) {
        let merged = self.metadata.merging(explicit ?? [:]) { $1 }.mapValues { "\($0)" }
        lines.append(CapturedLine(level: level, message: "\(message)", metadata: merged))
    }
}
