import Chorus
import ChorusProtocol
import ChorusTransport
import Synchronization
import Testing

/// The shared-secret handshake over real sockets: members with the secret work; a wrong secret, no
/// secret, a replayed handshake, a stranger at a member's link and a member speaking for another are
/// each refused with a precise error, and the group goes on.
@Suite(.serialized) struct AuthenticationTests {
    static let secret = Array("a shared secret of thirty-two by".utf8)

    static func configuration(secret: [UInt8]?) -> Configuration {
        var c = GroupHarness.testConfiguration()
        c.secret = secret
        c.handshakeTimeout = .seconds(2)
        return c
    }

    /// A connection of our own to `endpoint`, speaking frames by hand.
    struct Stranger {
        let engine: TransportEngine
        let connection: ConnectionID

        init(_ endpoint: String) throws {
            engine = try TransportEngine(settings: ProtocolEdgeTests.settings)
            connection = try engine.connect(host: "127.0.0.1", port: UInt16(endpoint.split(separator: ":").last!)!, timeout: .seconds(5))
        }

        func send(_ payload: [UInt8]) throws {
            try engine.sendControl(connection, address: FrameAddress(epoch: 0, opID: 0), payload: payload)
        }

        /// The next control payload, or nil once the other side closed (or after 10 s).
        func next() -> [UInt8]? {
            let deadline = ContinuousClock.now + .seconds(10)
            while ContinuousClock.now < deadline {
                switch engine.nextEvent(timeout: .milliseconds(100)) {
                case .control(let c, _, let payload)? where c == connection: return payload
                case .failed(let c, _)? where c == connection: return nil
                default: continue
                }
            }
            return nil
        }

        /// True once the other side closed the connection (within 10 s), skipping what it sends.
        func closed() -> Bool {
            let deadline = ContinuousClock.now + .seconds(10)
            while ContinuousClock.now < deadline {
                if case .failed(let c, _)? = engine.nextEvent(timeout: .milliseconds(100)), c == connection { return true }
            }
            return false
        }
    }

    /// Runs a genuine handshake (the test holds the secret) on `stranger`; the opening and the proof
    /// it sent, or nil when the master did not accept it.
    static func authenticate(_ stranger: Stranger) throws -> (opening: Handshake, proof: Handshake)? {
        var connector = ConnectorHandshake(secret: SharedSecret(secret))
        try stranger.send(connector.opening.encoded())
        guard let challenge = stranger.next(), case .reply(let proof) = try connector.receive(try Handshake(decoding: challenge)) else {
            return nil
        }
        try stranger.send(proof.encoded())
        guard let accepted = stranger.next(), case .authenticated = try connector.receive(try Handshake(decoding: accepted)) else {
            return nil
        }
        return (connector.opening, proof)
    }

    /// One all-reduce of rank-derived values on a formed pair, checked exactly.
    static func exchange(_ c0: Communicator, _ c1: Communicator, round: Float) async throws {
        async let other: [Float] = { var v: [Float] = [round, 2 * round]; try await c1.allReduce(&v); return v }()
        var mine: [Float] = [10 * round, 20 * round]
        try await c0.allReduce(&mine)
        let theirs = try await other
        #expect(mine == [11 * round, 22 * round] && theirs == mine)
    }

    static func connectError(_ master: Master, _ configuration: Configuration) async -> ChorusError? {
        do {
            let c = try await Communicator.connect(master: master.endpoint, configuration: configuration)
            try? await c.leave()
            return nil
        } catch {
            return error as? ChorusError
        }
    }

    @Test func membersWithTheSecretWorkWhileWrongOrMissingSecretsAreRefused() async throws {
        let master = try Master(host: "127.0.0.1", port: 0, configuration: Self.configuration(secret: Self.secret))
        defer { master.shutdown() }
        let (c0, c1) = try await ProtocolEdgeTests.formedPair(master, configuration: Self.configuration(secret: Self.secret))
        try await Self.exchange(c0, c1, round: 1)

        var wrong = Self.secret
        wrong[0] ^= 1
        let refusedWrong = await Self.connectError(master, Self.configuration(secret: wrong))
        #expect(refusedWrong == .authenticationFailed("the master at \(master.endpoint): wrong secret (the proof does not verify)"),
                "\(String(describing: refusedWrong))")
        let refusedNone = await Self.connectError(master, Self.configuration(secret: nil))
        guard case .authenticationFailed(let why)? = refusedNone else {
            Issue.record("no secret: \(String(describing: refusedNone))")
            return
        }
        #expect(why.contains("this master requires the shared secret"), "\(why)")
        #expect(!(refusedNone?.isRetryable ?? true))

        try await Self.exchange(c0, c1, round: 2)
        #expect(master.currentStatus.worldSize == 2 && master.currentStatus.pendingPeers == 0)
        #expect(c0.members == c1.members && c0.members.count == 2)
    }

    @Test func aSecretTheMasterDoesNotHaveIsRefused() async throws {
        let master = try Master(host: "127.0.0.1", port: 0, configuration: Self.configuration(secret: nil))
        defer { master.shutdown() }
        let refused = await Self.connectError(master, Self.configuration(secret: Self.secret))
        guard case .authenticationFailed(let why)? = refused else {
            Issue.record("\(String(describing: refused))")
            return
        }
        #expect(why.contains("this master has no secret configured"), "\(why)")
    }

    /// The opening and proof of a handshake that succeeded, replayed on a new connection, are
    /// refused: the master's nonce is new, so the recorded proof does not verify.
    @Test func aReplayedHandshakeIsRefused() async throws {
        let master = try Master(host: "127.0.0.1", port: 0, configuration: Self.configuration(secret: Self.secret))
        defer { master.shutdown() }
        guard let (opening, proof) = try Self.authenticate(try Stranger(master.endpoint)) else {
            Issue.record("the genuine handshake failed")
            return
        }

        let replay = try Stranger(master.endpoint)
        try replay.send(opening.encoded())
        _ = replay.next() // a fresh challenge, which the replayer cannot answer
        try replay.send(proof.encoded())
        try replay.send(PeerToMaster.register(listen: PeerAddress(host: "127.0.0.1", port: 9)).encoded())
        #expect(replay.next().map { try? Handshake(decoding: $0) } == .refused("wrong secret (the proof does not verify)"))
        #expect(replay.closed())
        #expect(master.currentStatus.pendingPeers == 0 && master.currentStatus.worldSize == 0)
    }

    /// A stranger dialling a member's listening port with a hello (no handshake) is refused and cut
    /// off; the members' collectives go on.
    @Test func aStrangerAtAMembersLinkIsRefused() async throws {
        let master = try Master(host: "127.0.0.1", port: 0, configuration: Self.configuration(secret: Self.secret))
        defer { master.shutdown() }
        let (c0, c1) = try await ProtocolEdgeTests.formedPair(master, configuration: Self.configuration(secret: Self.secret))
        let stranger = try Stranger(c1.listenAddress)
        try stranger.send(PeerToPeer.hello(epoch: c1.epoch, from: c0.peerID, to: c1.peerID, link: .mesh).encoded())
        // c1 reads its events while it works (an idle member's engine leaves a hello to its owner's
        // next call, and the handshake deadline closes it unanswered): collectives until the answer.
        let answered = Answered()
        async let busy: Void = {
            var round: Float = 3
            while !answered.value.withLock({ $0 }), round < 1_000_000 {
                try await Self.exchange(c0, c1, round: round)
                round += 1
            }
        }()
        let answer = stranger.next()
        answered.value.withLock { $0 = true }
        try await busy
        guard let answer, case .refused(let why)? = try? Handshake(decoding: answer) else {
            Issue.record("no refusal: \(String(describing: answer))")
            return
        }
        #expect(why.contains("this peer requires the shared secret"), "\(why)")
        #expect(stranger.closed())
        try await Self.exchange(c0, c1, round: 1)
    }

    final class Answered: Sendable { let value = Mutex(false) }

    /// A member (with the secret) that reports a failure in another peer's name is cut off with that
    /// reason; the report counts for nothing.
    @Test func aMemberReportingForAnotherIsCutOff() async throws {
        let master = try Master(host: "127.0.0.1", port: 0, configuration: Self.configuration(secret: Self.secret))
        defer { master.shutdown() }
        let forger = try Stranger(master.endpoint)
        guard try Self.authenticate(forger) != nil else {
            Issue.record("the genuine handshake failed")
            return
        }
        try forger.send(PeerToMaster.register(listen: PeerAddress(host: "127.0.0.1", port: 9)).encoded())
        var id: PeerID = 0, epoch: UInt64 = 0
        while epoch == 0, let payload = forger.next() {
            switch try MasterToPeer(decoding: payload) {
            case .registered(let assigned, _): id = assigned
            case .topology(let topology): epoch = topology.epoch // alone: admitted at once
            default: continue
            }
        }
        #expect(id != 0 && epoch != 0)
        let victim = id + 1
        let descriptor = OperationDescriptor(collective: 1, dataType: 0, reduceOp: 0, count: 1)
        try forger.send(PeerToMaster.report(epoch: epoch, opID: 1, descriptor: descriptor,
                                            outcome: .aborted(.linkFailed(reporter: victim, peer: id, detail: "forged"))).encoded())
        var rejection: MasterToPeer?
        while let payload = forger.next() {
            if case .rejected = try MasterToPeer(decoding: payload) { rejection = try MasterToPeer(decoding: payload) }
        }
        #expect(rejection == .rejected("peer \(id) sent a report in the name of peer \(victim)"))
        #expect(master.currentStatus.worldSize == 0)
    }
}
