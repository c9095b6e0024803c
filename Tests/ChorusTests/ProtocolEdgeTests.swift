import Chorus
import ChorusProtocol
import ChorusTransport
import Testing

/// Orderings the happy path never shows, driven by a hand-made peer that speaks the protocol over
/// its own transport engine: a member lost while the ring forms, a hello of an old epoch.
@Suite(.serialized) struct ProtocolEdgeTests {
    static let settings = TransportSettings(heartbeatInterval: .milliseconds(200), idleTimeout: .seconds(10))

    /// A protocol-speaking stand-in for a peer: registers with a listen address of its own.
    struct FakePeer {
        let engine: TransportEngine
        let master: ConnectionID
        let port: UInt16

        init(master endpoint: String) throws {
            engine = try TransportEngine(settings: ProtocolEdgeTests.settings)
            port = try engine.listen(host: "127.0.0.1", port: 0)
            let parts = endpoint.split(separator: ":")
            master = try engine.connect(host: String(parts[0]), port: UInt16(parts[1])!, timeout: .seconds(5))
            try engine.sendControl(master, address: FrameAddress(epoch: 0, opID: 0),
                                   payload: PeerToMaster.register(listen: PeerAddress(host: "127.0.0.1", port: port)).encoded())
        }

        /// The next message from the master, skipping everything else, within 30 s.
        func nextFromMaster() -> MasterToPeer? {
            let deadline = ContinuousClock.now + .seconds(30)
            while ContinuousClock.now < deadline {
                if case .control(let connection, _, let payload)? = engine.nextEvent(timeout: .milliseconds(100)),
                   connection == master, let message = try? MasterToPeer(decoding: payload) { return message }
            }
            return nil
        }
    }

    static func formedPair(_ master: Master, configuration: Configuration = GroupHarness.testConfiguration()) async throws
        -> (Communicator, Communicator) {
        try await formedPair(endpointMaster: master.endpoint, configuration: configuration)
    }

    /// Two communicators of the master at `endpoint`, formed into one epoch, rank 0 first.
    static func formedPair(endpointMaster endpoint: String, configuration: Configuration = GroupHarness.testConfiguration()) async throws
        -> (Communicator, Communicator) {
        @Sendable func member() async throws -> Communicator {
            let c = try await Communicator.connect(master: endpoint, configuration: configuration)
            while c.worldSize < 2 { try await c.updateTopology(minimumWorldSize: 2) }
            return c
        }
        async let a = member()
        async let b = member()
        let (first, second) = try await (a, b)
        return first.rank == 0 ? (first, second) : (second, first)
    }

    /// A joiner admitted into a new epoch dies before it connects: the member waiting for its hello
    /// fails `updateTopology` at once with `topologyFailed` (the master's abort ends the wait, not the
    /// 10 s connect timeout), and the next update forms the ring without it.
    @Test func aMemberLostWhileTheRingFormsFailsTheUpdateAtOnce() async throws {
        let master = try Master(host: "127.0.0.1", port: 0)
        defer { master.shutdown() }
        let (c0, c1) = try await Self.formedPair(master)
        let fake = try FakePeer(master: master.endpoint)
        var fakeID: PeerID = 0
        if case .registered(let id, _)? = fake.nextFromMaster() { fakeID = id }
        #expect(fakeID != 0)
        // (Members learn of waiting peers only while they make calls; the master knows at once.)
        while master.currentStatus.pendingPeers < 1 { try await Task.sleep(for: .milliseconds(2)) }
        async let u0: ChorusError? = { do { try await c0.updateTopology(); return nil } catch { return error as? ChorusError } }()
        async let u1: ChorusError? = { do { try await c1.updateTopology(); return nil } catch { return error as? ChorusError } }()
        // The topology that includes the fake arrives; it dies before dialling anyone.
        var sawTopology = false
        while let message = fake.nextFromMaster() {
            if case .topology(let topology) = message, topology.members.count == 3 { sawTopology = true; break }
        }
        #expect(sawTopology)
        let lost = ContinuousClock.now
        fake.engine.close(fake.master)
        let (e0, e1) = await (u0, u1)
        #expect(ContinuousClock.now - lost < .seconds(5), "the members waited for the connect timeout")
        // Rank 0 waits for the fake's hello and must fail at once; rank 1 needs nothing from the fake
        // and may keep its connected ring (the abort then surfaces on its next call).
        #expect(e0 == .topologyFailed("peer \(fakeID) was lost while the ring formed"), "\(String(describing: e0))")
        #expect(e1 == nil || e1 == e0, "\(String(describing: e1))")
        async let r0: Void = c0.updateTopology()
        async let r1: Void = c1.updateTopology()
        _ = try await (r0, r1)
        #expect(c0.worldSize == 2 && c1.worldSize == 2)
        async let s0 = c0.allReduce([Int32(1), 2])
        async let s1 = c1.allReduce([Int32(10), 20])
        #expect(try await [s0, s1] == [[11, 22], [11, 22]])
    }

    /// A hello naming an epoch that is over is refused: the member closes that connection, and the
    /// group goes on.
    @Test func aHelloOfAnOldEpochIsRefused() async throws {
        let master = try Master(host: "127.0.0.1", port: 0)
        defer { master.shutdown() }
        let (c0, c1) = try await Self.formedPair(master)
        let oldEpoch = c0.epoch
        async let u0: Void = c0.updateTopology()
        async let u1: Void = c1.updateTopology()
        _ = try await (u0, u1)
        #expect(c0.epoch > oldEpoch)
        let stranger = try TransportEngine(settings: Self.settings)
        let port = UInt16(c0.listenAddress.split(separator: ":").last!)!
        let link = try stranger.connect(host: "127.0.0.1", port: port, timeout: .seconds(5))
        try stranger.sendControl(link, address: FrameAddress(epoch: oldEpoch, opID: 0),
                                 payload: PeerToPeer.hello(epoch: oldEpoch, from: c1.peerID, to: c0.peerID, link: .mesh).encoded())
        // The member reads events while it runs a collective.
        async let s0 = c0.allReduce([Float(1)])
        async let s1 = c1.allReduce([Float(2)])
        #expect(try await [s0, s1] == [[3], [3]])
        var closed = false
        let deadline = ContinuousClock.now + .seconds(10)
        while !closed && ContinuousClock.now < deadline {
            async let b0: Void = c0.barrier() // keeps c0 draining its events
            async let b1: Void = c1.barrier()
            _ = try await (b0, b1)
            if case .failed(let connection, _)? = stranger.nextEvent(timeout: .milliseconds(50)), connection == link { closed = true }
        }
        #expect(closed, "the hello of epoch \(oldEpoch) was not refused")
    }

    /// A receiver asking a source for bytes outside the plan's tensors is cut off at once; the
    /// source's synchronization still ends (the receiver is then lost) and its tensor is untouched.
    @Test func aStateRequestOutOfBoundsCutsTheReceiverOff() async throws {
        let master = try Master(host: "127.0.0.1", port: 0)
        defer { master.shutdown() }
        let member = try await Communicator.connect(master: master.endpoint, configuration: GroupHarness.testConfiguration())
        let fake = try FakePeer(master: master.endpoint)
        guard case .registered(let fakeID, _)? = fake.nextFromMaster() else {
            Issue.record("the fake was not registered")
            return
        }
        async let admitted: Void = member.updateTopology(minimumWorldSize: 2)
        var topology: Topology?
        while let message = fake.nextFromMaster() {
            if case .topology(let offered) = message { topology = offered; break }
        }
        let epoch = try #require(topology).epoch
        let memberAddress = try #require(topology?.members.first { $0.id != fakeID }).address
        // Rank 1 of two: one ring lane to the member (its right neighbour); the member dials us.
        let lane = try fake.engine.connect(host: memberAddress.host, port: memberAddress.port, timeout: .seconds(5))
        try fake.engine.sendControl(lane, address: FrameAddress(epoch: epoch, opID: 0), payload: PeerToPeer.hello(
            epoch: epoch, from: fakeID, to: member.peerID, link: .ring(lane: 0, lanes: 1)).encoded())
        try await admitted
        var mesh: ConnectionID?
        let deadline = ContinuousClock.now + .seconds(10)
        while mesh == nil && ContinuousClock.now < deadline {
            if case .control(let connection, _, let payload)? = fake.engine.nextEvent(timeout: .milliseconds(100)),
               case .hello(_, _, _, .mesh)? = try? PeerToPeer(decoding: payload) { mesh = connection }
        }
        let meshLink = try #require(mesh, "the member did not dial its mesh link")

        let state = SharedState(revision: 5)
        let weights = try state.add("w", values: (0 ..< 1000).map { Float($0) })
        async let synchronized = member.synchronize(state)
        let digest = StateDigest(revision: 4, strategy: .elect, tensors: [
            TensorDigest(name: "w", dataType: DataType.float32.rawValue, count: 1000, allowedToDiffer: false, hash: 1)])
        try fake.engine.sendControl(fake.master, address: FrameAddress(epoch: epoch, opID: 0),
                                    payload: PeerToMaster.syncState(epoch: epoch, opID: 1, digest).encoded())
        var planned = false
        while let message = fake.nextFromMaster() {
            if case .syncPlan(_, 1, let plan) = message { planned = plan.receivers.contains { $0.id == fakeID }; break }
        }
        #expect(planned, "the plan makes the fake a receiver")
        // 4000 bytes of tensor: ask for 4096 from offset 8000.
        try fake.engine.sendControl(meshLink, address: FrameAddress(epoch: epoch, opID: 1),
                                    payload: PeerToPeer.stateRequest(tensor: 0, offset: 8000, length: 4096, tag: 0).encoded())
        var cutOff = false
        let asked = ContinuousClock.now
        while !cutOff && ContinuousClock.now - asked < .seconds(10) {
            if case .failed(let connection, _)? = fake.engine.nextEvent(timeout: .milliseconds(100)), connection == meshLink { cutOff = true }
        }
        #expect(cutOff, "the source kept serving a receiver that asked out of bounds")
        fake.engine.close(fake.master) // the receiver is gone; the source's synchronization ends
        let result = try await synchronized
        #expect(!result.wasOutdated && result.revision == 5)
        #expect(weights.values(as: Float.self) == (0 ..< 1000).map { Float($0) })
    }

    /// A stranger that connects to the master's port and to a peer's and sends a data-frame header
    /// there (no registration, no hello) used to park both connections for good. Now each is closed
    /// at the handshake deadline, and the members' collectives go on meanwhile and after.
    @Test func aStrangersDataFrameIsClosedAtTheHandshakeDeadlineWhileMembersWork() async throws {
        var configuration = GroupHarness.testConfiguration()
        configuration.handshakeTimeout = .milliseconds(500)
        let master = try Master(host: "127.0.0.1", port: 0, configuration: configuration)
        defer { master.shutdown() }
        let (c0, c1) = try await Self.formedPair(master, configuration: configuration)
        let stranger = try TransportEngine(settings: Self.settings)
        let payload = [UInt8](repeating: 7, count: 1 << 16)
        var targets: [ConnectionID] = [], sends: [TransportRequest] = []
        for endpoint in [master.endpoint, c1.listenAddress] {
            let port = UInt16(endpoint.split(separator: ":").last!)!
            let connection = try stranger.connect(host: "127.0.0.1", port: port, timeout: .seconds(5))
            sends.append(try payload.withUnsafeBytes { bytes throws(TransportError) in
                try stranger.postSend(connection, address: FrameAddress(epoch: 1, opID: 1), bytes: bytes)
            })
            targets.append(connection)
        }
        let started = ContinuousClock.now
        async let busy: [Float] = { var v: [Float] = [1, 2, 3]; try await c1.allReduce(&v); return v }()
        var mine: [Float] = [10, 20, 30]
        try await c0.allReduce(&mine)
        let theirs = try await busy
        #expect(mine == [11, 22, 33] && theirs == [11, 22, 33], "members work while the stranger waits")
        var closed = Set<ConnectionID>()
        while closed.count < targets.count && ContinuousClock.now - started < .seconds(20) {
            if case .failed(let connection, _)? = stranger.nextEvent(timeout: .milliseconds(100)) { closed.insert(connection) }
        }
        let waited = ContinuousClock.now - started
        #expect(closed == Set(targets), "the master and the peer both closed the stranger")
        #expect(waited < .milliseconds(500) + .seconds(3), "within the handshake deadline and slack: \(waited)")
        for request in sends { _ = stranger.wait(request, timeout: .seconds(5), interruptible: false) }
        var after: [Float] = [5]
        async let other: [Float] = { var v: [Float] = [6]; try await c1.allReduce(&v); return v }()
        try await c0.allReduce(&after)
        let otherResult = try await other
        #expect(after == [11] && otherResult == [11])
        #expect(master.currentStatus.worldSize == 2)
    }
}
