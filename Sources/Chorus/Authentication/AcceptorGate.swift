import ChorusProtocol
import ChorusTransport
import Logging

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
    private var refusals = RefusalLog()

    init(secret: SharedSecret?, name: String) {
        self.secret = secret
        self.name = name
    }

    /// Screens a control frame and carries out what the handshake needs on `engine`: true when the
    /// frame is the owner's to handle (authenticated, or no secret); false when it was a handshake
    /// step (answered) or refused (answered, logged, and the connection closed).
    mutating func admits(_ connection: ConnectionID, _ payload: [UInt8], engine: TransportEngine, logger: Logger) -> Bool {
        let address = FrameAddress(epoch: 0, opID: 0)
        switch screen(connection, payload) {
        case .pass:
            return true
        case .handshake(let reply):
            try? engine.sendControl(connection, address: address, payload: reply)
            return false
        case .refuse(let reply, let why):
            refusals.refused("refused a connection from \(engine.remoteAddress(connection) ?? "?"): authentication failed: \(why)",
                             logger: logger)
            try? engine.sendControl(connection, address: address, payload: reply)
            engine.close(connection)
            forget(connection)
            return false
        }
    }

    /// Sums up the refusals of a logging window that is over (the master calls it as it serves).
    mutating func flushRefusals(logger: Logger) { refusals.flush(logger: logger) }

    enum Decision {
        /// Authenticated (or no secret): decode and handle the message as usual.
        case pass
        /// A handshake step: send `reply`; the message is consumed.
        case handshake(reply: [UInt8])
        /// Send `reply`, then close the connection; `why` is for the log.
        case refuse(reply: [UInt8], why: String)
    }

    private mutating func screen(_ connection: ConnectionID, _ payload: [UInt8]) -> Decision {
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
