import ChorusProtocol
import ChorusTransport

/// The accepting side of the shared-secret handshake (`Handshake`), for the master and for a peer's
/// inbound links. With a secret, nothing an accepted connection sends counts until it has proved it
/// holds the secret; without one, everything passes, and a connector that tries to authenticate is
/// told that no secret is configured here (instead of a silent close).
struct AcceptorGate {
    private let secret: SharedSecret?
    /// What this side is, for the refusals ("this master", "this peer").
    private let name: String
    private var handshakes: [ConnectionID: AcceptorHandshake] = [:]
    private var authenticated: Set<ConnectionID> = []

    init(secret: SharedSecret?, name: String) {
        self.secret = secret
        self.name = name
    }

    enum Decision {
        /// Authenticated (or no secret): decode and handle the message as usual.
        case pass
        /// A handshake step: send `reply`; the message is consumed.
        case handshake(reply: [UInt8])
        /// Send `reply`, then close the connection; `why` is for the log.
        case refuse(reply: [UInt8], why: String)
    }

    mutating func screen(_ connection: ConnectionID, _ payload: [UInt8]) -> Decision {
        guard let secret else {
            guard Handshake.isHandshake(payload) else { return .pass }
            let why = "\(name) has no secret configured, and the connection opened with a handshake (set the same secret on both sides, or none)"
            return .refuse(reply: Handshake.refused(why).encoded(), why: why)
        }
        if authenticated.contains(connection) { return .pass }
        guard let message = try? Handshake(decoding: payload) else {
            let why = "\(name) requires the shared secret (CHORUS_SECRET_FILE or CHORUS_SECRET), and the connection sent something else first"
            return .refuse(reply: Handshake.refused(why).encoded(), why: why)
        }
        var handshake = handshakes[connection] ?? AcceptorHandshake(secret: secret)
        do {
            switch try handshake.receive(message) {
            case .reply(let reply):
                handshakes[connection] = handshake
                return .handshake(reply: reply.encoded())
            case .authenticated(let reply):
                handshakes[connection] = nil
                authenticated.insert(connection)
                return .handshake(reply: reply.encoded())
            }
        } catch {
            handshakes[connection] = nil
            return .refuse(reply: Handshake.refused(error.reason).encoded(), why: error.reason)
        }
    }

    /// A link this side dialed and authenticated as the connector: what comes back on it counts.
    mutating func trust(_ connection: ConnectionID) {
        if secret != nil { authenticated.insert(connection) }
    }

    /// The connection closed: drop what is kept for it.
    mutating func forget(_ connection: ConnectionID) {
        handshakes[connection] = nil
        authenticated.remove(connection)
    }
}
