/// The shared-secret handshake that opens every connection (to the master and between peers) when a
/// secret is configured: a mutual challenge-response with a fresh 32-byte nonce from each side.
///
///     connector → acceptor   open(Nc)
///     acceptor  → connector  challenge(Na)
///     connector → acceptor   proof(HMAC(K, "connector" | Nc | Na)), then its registration or hello
///     acceptor  → connector  accepted(HMAC(K, "acceptor" | Nc | Na))
///
/// K is derived from the secret with HKDF-SHA256. Each proof covers the other side's fresh nonce, so
/// a recorded handshake replayed on a new connection fails; the labels differ, so one side's proof
/// never serves as the other's. The connector proves itself first, so a stranger who connects learns
/// nothing computed from the secret (no sample to guess it from offline); the acceptor's proof then
/// tells the connector it reached a holder of the secret. Nothing here authenticates the frames that
/// follow (see DESIGN.md, "Threat model").
public enum Handshake: Hashable, Sendable {
    /// The connector's first frame: its nonce.
    case open(nonce: [UInt8])
    /// The acceptor's nonce.
    case challenge(nonce: [UInt8])
    /// The connector's proof over both nonces.
    case proof([UInt8])
    /// The acceptor's proof over both nonces: the handshake succeeded.
    case accepted(proof: [UInt8])
    /// One side will not authenticate the other (a wrong proof, no secret on one side); the
    /// connection closes after it.
    case refused(String)

    static let nonceBytes = 32
    static let proofBytes = 32
}

private enum HandshakeKind: UInt8 {
    case open = 0xC1, challenge = 0xC2, proof = 0xC3, accepted = 0xC4, refused = 0xC5
}

extension Handshake {
    public func encoded() -> [UInt8] {
        var w = ByteWriter()
        switch self {
        case .open(let nonce): w.u8(HandshakeKind.open.rawValue); w.raw(nonce)
        case .challenge(let nonce): w.u8(HandshakeKind.challenge.rawValue); w.raw(nonce)
        case .proof(let proof): w.u8(HandshakeKind.proof.rawValue); w.raw(proof)
        case .accepted(let proof): w.u8(HandshakeKind.accepted.rawValue); w.raw(proof)
        case .refused(let why): w.u8(HandshakeKind.refused.rawValue); w.string(why)
        }
        return w.bytes
    }

    public init(decoding bytes: [UInt8]) throws(DecodeError) {
        var r = ByteReader(bytes)
        switch HandshakeKind(rawValue: try r.u8()) {
        case .open: self = .open(nonce: try r.raw(Self.nonceBytes))
        case .challenge: self = .challenge(nonce: try r.raw(Self.nonceBytes))
        case .proof: self = .proof(try r.raw(Self.proofBytes))
        case .accepted: self = .accepted(proof: try r.raw(Self.proofBytes))
        case .refused: self = .refused(try r.string())
        case nil: throw DecodeError("not a handshake message")
        }
        try r.expectEnd()
    }

    /// Whether a control payload is a handshake message (its kind byte), without decoding it.
    public static func isHandshake(_ payload: [UInt8]) -> Bool {
        payload.first.map { HandshakeKind(rawValue: $0) != nil } ?? false
    }
}
