import Chorus
import ChorusLauncher
import ChorusTestSupport
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The RDMA transport, end to end. These run where an RDMA device exists, e.g. inside
/// `../shared/tools/run-in-softroce-vm.sh` (Soft-RoCE on 10.99.0.1; `CHORUS_RDMA_TEST_HOST` names
/// another address on an RDMA interface); elsewhere they are skipped, and the fallback tests run.
/// `CHORUS_REQUIRE_RDMA=1` (set by CI inside the VM) runs them whatever the probe says, so a device
/// that cannot be opened, or a build without the RDMA backend, fails the run instead of skipping it.
let rdmaTestsRequired = Configuration.currentEnvironment()["CHORUS_REQUIRE_RDMA"] == "1"

@Suite(.serialized, .enabled(if: TransportKind.rdmaUnavailableReason == nil || rdmaTestsRequired, "no RDMA device on this machine"))
struct RDMATests {
    static let host = Configuration.currentEnvironment()["CHORUS_RDMA_TEST_HOST"] ?? "10.99.0.1"

    /// `.auto` takes RDMA when a device serves the bind address (and shared memory on loopback).
    @Test func autoChoosesRDMAWhereADeviceServesTheBindAddress() throws {
        var configuration = Self.configuration()
        configuration.transport = .auto
        let seen = Mutex<[String]>([])
        try GroupHarness.run(worldSize: 2, configuration: configuration) { c in
            var values = [Float(c.rank + 1), 5]
            try c.allReduce(&values)
            seen.withLock { $0.append("\(c.transport) \(values)") }
        }
        #expect(seen.withLock { $0 } == ["rdma [3.0, 10.0]", "rdma [3.0, 10.0]"])
    }

    @Test func rdmaIsAvailableHere() {
        #expect(TransportKind.rdmaUnavailableReason == nil, "RDMA tests required, but: \(TransportKind.rdmaUnavailableReason ?? "")")
    }

    static func configuration() -> Configuration {
        // Frames of several RDMA messages, so credits come back while a frame is half received.
        var c = GroupHarness.testConfiguration(segmentBytes: 200_000)
        c.transport = .rdma
        c.bindHost = host
        return c
    }

    @Test(arguments: 2 ... 4)
    func allReduceOfEveryDataTypeMatchesTheReference(worldSize n: Int) throws {
        let problems = Mutex<[String]>([])
        try GroupHarness.run(worldSize: n, configuration: Self.configuration()) { c in
            if c.transport != .rdma { problems.withLock { $0.append("rank \(c.rank) is on \(c.transport)") } }
            for dataType in DataType.allCases {
                // Nothing; empty chunks (1 element over n ranks); one message; several per frame.
                for count in [0, 1, 13, 40_003] {
                    for (op, algorithm) in [(ReduceOp.sum, AllReduceAlgorithm.ring), (.max, .recursiveDoubling)] {
                        let inputs = (0 ..< n).map { TestInputs.make(rank: $0, count: count, dataType: dataType, op: op) }
                        let expected = algorithm == .ring
                            ? ReferenceReduction.ringAllReduce(inputs, count: count, dataType: dataType, op: op)
                            : ReferenceReduction.recursiveDoublingAllReduce(inputs, count: count, dataType: dataType, op: op)
                        var values = inputs[c.rank]
                        try values.withUnsafeMutableBytes {
                            try c.allReduce(inPlace: $0, count: count, dataType: dataType, op: op, algorithm: algorithm)
                        }
                        if values != expected { problems.withLock { $0.append("n=\(n) rank \(c.rank) \(dataType) \(op) \(count)") } }
                    }
                }
            }
        }
        #expect(problems.withLock { $0 } == [])
    }

    /// With a shared secret the handshake runs on each link's TCP connection before its RDMA data
    /// counts: members with the secret all-reduce exactly; a peer with another secret is refused.
    @Test func membersWithTheSecretAllReduceOverRDMAAndAWrongSecretIsRefused() async throws {
        var configuration = Self.configuration()
        configuration.secret = AuthenticationTests.secret
        let master = try Master(host: Self.host, port: 0, configuration: configuration)
        defer { master.shutdown() }
        let (c0, c1) = try await ProtocolEdgeTests.formedPair(master, configuration: configuration)
        #expect(c0.transport == .rdma && c1.transport == .rdma)
        let count = 40_003
        async let other: [Float] = { var v = (0 ..< count).map { Float($0 % 251) }; try await c1.allReduce(&v); return v }()
        var mine = (0 ..< count).map { Float(1000 + $0 % 127) }
        try await c0.allReduce(&mine)
        let theirs = try await other
        let expected = (0 ..< count).map { Float($0 % 251) + Float(1000 + $0 % 127) }
        #expect(mine == expected && theirs == expected)
        var wrong = configuration
        wrong.secret = Array("another secret, thirty-two bytes".utf8)
        let refused = await AuthenticationTests.connectError(master, wrong)
        #expect(refused == .authenticationFailed("the master at \(master.endpoint): wrong secret (the proof does not verify)"))
    }

    /// Frames sent from registered memory skip the copy into the slots; results stay bitwise exact.
    @Test func registeredBuffersSendWithoutCopyingAndGiveTheSameBits() throws {
        let problems = Mutex<[String]>([])
        try GroupHarness.run(worldSize: 3, configuration: Self.configuration()) { c in
            for (dataType, count) in [(DataType.float32, 150_001), (.bfloat16, 7), (.int64, 40_000)] {
                let inputs = (0 ..< 3).map { TestInputs.make(rank: $0, count: count, dataType: dataType, op: .sum) }
                let expected = ReferenceReduction.ringAllReduce(inputs, count: count, dataType: dataType, op: .sum)
                var values = inputs[c.rank]
                try values.withUnsafeMutableBytes { buffer in
                    let registration = try c.registerMemory(UnsafeRawBufferPointer(buffer))
                    defer { registration.unregister() }
                    for _ in 0 ..< 2 { // the second round reuses the regions made in the first
                        buffer.copyBytes(from: inputs[c.rank])
                        try c.allReduce(inPlace: buffer, count: count, dataType: dataType, op: .sum, algorithm: .ring)
                        if Array(buffer) != expected { problems.withLock { $0.append("rank \(c.rank) \(dataType) \(count)") } }
                    }
                }
            }
        }
        #expect(problems.withLock { $0 } == [])
    }

    @Test func sharedStateCatchesUpOverRDMA() throws {
        let problems = Mutex<[String]>([])
        try GroupHarness.run(worldSize: 3, configuration: Self.configuration()) { c in
            let state = SharedState(revision: c.rank == 2 ? 0 : 4)
            let weights = try state.add("w", values: (0 ..< 300_000).map { c.rank == 2 ? Float(-1) : Float($0) * 0.5 })
            let result = try c.synchronize(state)
            let exact = weights.values(as: Float.self).enumerated().allSatisfy { $0.element == Float($0.offset) * 0.5 }
            if result.wasOutdated != (c.rank == 2) || !exact || state.revision != 4 {
                problems.withLock { $0.append("rank \(c.rank): \(result) exact=\(exact)") }
            }
        }
        #expect(problems.withLock { $0 } == [])
    }

    @Test func aKilledPeerGivesOneVerdictAndTheRetrySucceeds() throws {
        let master = try Master(host: "127.0.0.1", port: 0)
        defer { master.shutdown() }
        let peers = try ProcessFaultTests.startPeers(3, master: master.endpoint, rounds: 6, elements: 1 << 16,
                                                     extraEnvironment: ["CHORUS_TRANSPORT": "rdma", "CHORUS_BIND": Self.host])
        #expect(ProcessFaultTests.waitForRound(1, peers))
        peers[2].signal(SIGKILL)
        #expect(peers[2].waitForExit(timeoutMilliseconds: 10_000) == 128 + SIGKILL)
        ProcessFaultTests.checkRecovery(survivors: Array(peers[0 ..< 2]), expectedWorld: 2)
    }
}

/// Where RDMA is absent: asking for it is a clear error, and the default falls back to shared
/// memory (TCP between hosts).
@Suite(.enabled(if: TransportKind.rdmaUnavailableReason != nil && !rdmaTestsRequired, "this machine has an RDMA device"))
struct RDMAFallbackTests {
    @Test func askingForRDMAIsAClearErrorAndAutoFallsBackToSharedMemory() throws {
        let reason = try #require(TransportKind.rdmaUnavailableReason)
        #expect(reason.contains("RDMA"), "the reason names RDMA: \(reason)")
        let master = try Master(host: "127.0.0.1", port: 0)
        defer { master.shutdown() }
        var rdma = GroupHarness.testConfiguration()
        rdma.transport = .rdma
        do {
            _ = try Communicator(master: master.endpoint, configuration: rdma)
            Issue.record("an RDMA communicator was created without RDMA")
        } catch let error as ChorusError {
            #expect(error == .setupFailed("transport rdma was asked for, but \(reason)"), "\(error)")
        }
        #expect(throws: ChorusError.self) { try Configuration.fromEnvironment(["CHORUS_TRANSPORT": "infiniband"]) }
        #expect(try Configuration.fromEnvironment(["CHORUS_TRANSPORT": "rdma"]).transport == .rdma)
        let seen = Mutex<[String]>([])
        try GroupHarness.run(worldSize: 2) { c in
            var values = [Float(c.rank + 1), 2]
            try c.allReduce(&values)
            seen.withLock { $0.append("\(c.transport) \(values)") }
        }
        #expect(seen.withLock { $0 } == ["shm [3.0, 4.0]", "shm [3.0, 4.0]"])
    }
}
