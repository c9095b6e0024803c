import ChorusProtocol
import Testing

/// The shared-secret handshake without sockets: both sides' state machines against each other.
@Suite struct HandshakeTests {
    static let secret = SharedSecret(Array("correct horse battery staple".utf8))
    static let other = SharedSecret(Array("correct horse battery stapler".utf8))

    /// Runs the four steps; returns what the acceptor decided and the connector's last step.
    private func run(connector secretA: SharedSecret, acceptor secretB: SharedSecret)
        -> (acceptor: AcceptorHandshake.Step?, connector: ConnectorHandshake.Step?, failure: HandshakeFailure?) {
        var connector = ConnectorHandshake(secret: secretA)
        var acceptor = AcceptorHandshake(secret: secretB)
        do {
            guard case .reply(let challenge) = try acceptor.receive(connector.opening) else { throw HandshakeFailure("no challenge") }
            guard case .reply(let proof) = try connector.receive(challenge) else { throw HandshakeFailure("no proof") }
            let accepted = try acceptor.receive(proof)
            guard case .authenticated(let answer) = accepted else { return (accepted, nil, nil) }
            return (accepted, try connector.receive(answer), nil)
        } catch let failure as HandshakeFailure {
            return (nil, nil, failure)
        } catch {
            return (nil, nil, HandshakeFailure("\(error)"))
        }
    }

    @Test func theSameSecretAuthenticatesBothSides() {
        let result = run(connector: Self.secret, acceptor: Self.secret)
        guard case .authenticated? = result.acceptor, case .authenticated? = result.connector else {
            Issue.record("\(result)")
            return
        }
    }

    @Test func aDifferentSecretFailsAtTheAcceptor() {
        let result = run(connector: Self.other, acceptor: Self.secret)
        #expect(result.failure == HandshakeFailure("wrong secret (the proof does not verify)"))
    }

    /// A proof recorded from one connection does not open another: the acceptor's nonce is fresh.
    @Test func aReplayedProofIsRefused() throws {
        var connector = ConnectorHandshake(secret: Self.secret)
        var first = AcceptorHandshake(secret: Self.secret)
        guard case .reply(let challenge) = try first.receive(connector.opening),
              case .reply(let proof) = try connector.receive(challenge) else { Issue.record("no proof"); return }
        var second = AcceptorHandshake(secret: Self.secret)
        _ = try second.receive(connector.opening) // the recorded opening, replayed
        #expect(throws: HandshakeFailure("wrong secret (the proof does not verify)")) { try second.receive(proof) }
    }

    /// An acceptor that does not hold the secret cannot answer a connector's proof with its own.
    @Test func anImpostorAcceptorIsRefusedByTheConnector() throws {
        var connector = ConnectorHandshake(secret: Self.secret)
        var impostor = AcceptorHandshake(secret: Self.other)
        guard case .reply(let challenge) = try impostor.receive(connector.opening),
              case .reply = try connector.receive(challenge) else { Issue.record("no proof"); return }
        // The impostor cannot verify the proof, so it cannot produce `accepted`; a forged one fails.
        let forged = Handshake.accepted(proof: [UInt8](repeating: 7, count: 32))
        #expect(throws: HandshakeFailure("the other side does not hold the same secret (its proof does not verify)")) {
            try connector.receive(forged)
        }
    }

    @Test func messagesOutOfOrderAreRefused() throws {
        var acceptor = AcceptorHandshake(secret: Self.secret)
        #expect(throws: HandshakeFailure("handshake message out of order")) { try acceptor.receive(.proof([UInt8](repeating: 1, count: 32))) }
        var connector = ConnectorHandshake(secret: Self.secret)
        #expect(throws: HandshakeFailure("the other side answered the handshake out of order")) {
            try connector.receive(.accepted(proof: [UInt8](repeating: 1, count: 32)))
        }
    }

    @Test func everyMessageRoundTripsAndTruncationIsRejected() throws {
        let messages: [Handshake] = [.open(nonce: Array(0 ..< 32)), .challenge(nonce: Array(32 ..< 64)), .proof(Array(64 ..< 96)),
                                     .accepted(proof: Array(96 ..< 128)), .refused("wrong secret")]
        for message in messages {
            let bytes = message.encoded()
            #expect(Handshake.isHandshake(bytes))
            #expect(try Handshake(decoding: bytes) == message)
            #expect(throws: DecodeError.self) { try Handshake(decoding: Array(bytes.dropLast())) }
            #expect(throws: DecodeError.self) { try Handshake(decoding: bytes + [0]) }
        }
        #expect(!Handshake.isHandshake(PeerToMaster.leave(epoch: 1).encoded()))
    }
}
