import Crypto

// The two sides of the handshake (`Handshake`) and the key they share: the part that computes. Kept
// apart from the messages so the codec builds (and is fuzzed) without the crypto library.

/// Why a handshake failed.
public struct HandshakeFailure: Error, Hashable, Sendable, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { "authentication failed: \(reason)" }
}

/// The key both sides derive from the configured secret.
public struct SharedSecret: Sendable {
    private let key: SymmetricKey

    /// The shortest secret accepted: shorter ones could be guessed offline from one observed handshake.
    public static let minimumBytes = 16

    public init(_ secret: [UInt8]) {
        key = HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: secret),
                                     info: Array("chorus handshake v1".utf8), outputByteCount: 32)
    }

    fileprivate enum Role: String { case acceptor, connector }

    private func code(_ role: Role, connectorNonce: [UInt8], acceptorNonce: [UInt8]) -> HMAC<SHA256>.MAC {
        var mac = HMAC<SHA256>(key: key)
        mac.update(data: Array(role.rawValue.utf8))
        mac.update(data: connectorNonce)
        mac.update(data: acceptorNonce)
        return mac.finalize()
    }

    fileprivate func proof(_ role: Role, connectorNonce: [UInt8], acceptorNonce: [UInt8]) -> [UInt8] {
        Array(code(role, connectorNonce: connectorNonce, acceptorNonce: acceptorNonce))
    }

    fileprivate func verify(_ claimed: [UInt8], _ role: Role, connectorNonce: [UInt8], acceptorNonce: [UInt8]) -> Bool {
        // MAC == bytes compares in constant time.
        code(role, connectorNonce: connectorNonce, acceptorNonce: acceptorNonce) == claimed
    }

    fileprivate static func nonce() -> [UInt8] {
        var generator = SystemRandomNumberGenerator() // getrandom(2) on Linux
        return (0 ..< Handshake.nonceBytes).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }
}

/// The connecting side of one handshake.
public struct ConnectorHandshake: Sendable {
    private let secret: SharedSecret
    private let nonce = SharedSecret.nonce()
    private var acceptorNonce: [UInt8]?

    public init(secret: SharedSecret) { self.secret = secret }

    /// The first frame to send.
    public var opening: Handshake { .open(nonce: nonce) }

    public enum Step: Sendable {
        /// Send this (then the registration or hello) and wait for the acceptor's proof.
        case reply(Handshake)
        /// The acceptor proved it holds the secret.
        case authenticated
    }

    /// Takes the acceptor's next message. On a failure, send `Handshake.refused(failure.reason)`
    /// before closing, so the acceptor can log why.
    public mutating func receive(_ message: Handshake) throws(HandshakeFailure) -> Step {
        switch (message, acceptorNonce) {
        case (.challenge(let theirs), nil):
            acceptorNonce = theirs
            return .reply(.proof(secret.proof(.connector, connectorNonce: nonce, acceptorNonce: theirs)))
        case (.accepted(let proof), let theirs?):
            guard secret.verify(proof, .acceptor, connectorNonce: nonce, acceptorNonce: theirs) else {
                throw HandshakeFailure("the other side does not hold the same secret (its proof does not verify)")
            }
            return .authenticated
        case (.refused(let why), _):
            throw HandshakeFailure(why)
        default:
            throw HandshakeFailure("the other side answered the handshake out of order")
        }
    }
}

/// The accepting side of one handshake.
public struct AcceptorHandshake: Sendable {
    private let secret: SharedSecret
    private let nonce = SharedSecret.nonce()
    private var connectorNonce: [UInt8]?

    public init(secret: SharedSecret) { self.secret = secret }

    public enum Step: Sendable {
        /// Send this and wait for the connector's proof.
        case reply(Handshake)
        /// The connector proved it holds the secret: send this (the acceptor's proof).
        case authenticated(Handshake)
    }

    public mutating func receive(_ message: Handshake) throws(HandshakeFailure) -> Step {
        switch (message, connectorNonce) {
        case (.open(let theirs), nil):
            connectorNonce = theirs
            return .reply(.challenge(nonce: nonce))
        case (.proof(let proof), let theirs?):
            guard secret.verify(proof, .connector, connectorNonce: theirs, acceptorNonce: nonce) else {
                throw HandshakeFailure("wrong secret (the proof does not verify)")
            }
            return .authenticated(.accepted(proof: secret.proof(.acceptor, connectorNonce: theirs, acceptorNonce: nonce)))
        case (.refused(let why), _):
            throw HandshakeFailure("the connecting side gave up: \(why)")
        default:
            throw HandshakeFailure("handshake message out of order")
        }
    }
}
