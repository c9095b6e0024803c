import ChorusProtocol
import ChorusTransport

/// A peer that lost its master connection keeps its session and dials the master's address again
/// (`Configuration.masterWindow`), without blocking: the session's waits drive it between events,
/// so links, hellos and verdicts are handled meanwhile. The first message on the new connection is
/// `rejoin`; the master answers `resumed` (the same master moved the session to the new connection,
/// or a restarted one re-adopted the group) or `rejected` (it does not count this peer: `evicted`).
/// After `resumed` the peer sends again what the master had not answered (`unanswered`).
struct MasterRecovery {
    /// Why the old connection ended.
    let cause: String
    let started: ContinuousClock.Instant
    let deadline: ContinuousClock.Instant
    /// The dial under way, if any.
    var attempt: ConnectionID?
    /// With a secret, until the master proved it holds it.
    var handshake: ConnectorHandshake?
    var nextDial: ContinuousClock.Instant
    /// Why the last attempt did not resume the session.
    var lastFailure = "no attempt finished"
    /// The rejoin went out on `attempt`.
    var rejoined = false
    /// Members whose links went silent (idle timeout) meanwhile: the master is told after the
    /// rejoin, so that a restarted one need not wait out its window for a member that is stopped.
    var silentMembers: Set<PeerID> = []

    /// Between two dials of a master that refuses or closes connections.
    static let redialInterval: Duration = .milliseconds(50)
    /// Why an attempt failed when the master's kernel accepted the dial but the master said nothing.
    static let silentMaster = "it accepted a connection but did not answer (paused or overloaded?)"
}

extension PeerSession {
    /// The master connection failed: try to reach a master again, unless this peer never registered
    /// (there is no session to resume).
    func beginRecovery(after error: TransportError) {
        guard peerID != 0 else {
            loseMaster("connection to the master failed before it registered this peer: \(error)")
            return
        }
        let window = max(configuration.masterWindow, min(configuration.peerTimeout, .seconds(3)))
        recovery = MasterRecovery(cause: "\(error)", started: .now, deadline: .now + window, nextDial: .now)
        logger.warning("lost the master at \(masterEndpoint.host):\(masterEndpoint.port) (\(error)); trying to reach it again for \(window)")
        driveRecovery()
    }

    /// Dials when it is time, and gives up at the window's end. Called from every wait of the session.
    func driveRecovery() {
        guard var current = recovery else { return }
        let now = ContinuousClock.now
        if now >= current.deadline {
            if let attempt = current.attempt {
                engine.close(attempt)
                current.lastFailure = MasterRecovery.silentMaster
            }
            recovery = nil
            loseMaster("lost the master at \(masterEndpoint.host):\(masterEndpoint.port) (\(current.cause)) and could not resume "
                       + "the session within \(current.deadline - current.started): \(current.lastFailure)")
            return
        }
        guard current.attempt == nil, now >= current.nextDial else { return }
        do {
            let connection = try engine.connect(host: masterEndpoint.host, port: masterEndpoint.port,
                                                timeout: min(configuration.connectTimeout, current.deadline - now))
            current.attempt = connection
            current.handshake = secret.map(ConnectorHandshake.init)
            let first = current.handshake?.opening.encoded() ?? PeerToMaster.rejoin(rejoinReport).encoded()
            try engine.sendControl(connection, address: FrameAddress(epoch: topology.epoch, opID: 0), payload: first)
            if current.handshake == nil { try rejoined(&current, on: connection) }
        } catch {
            if let attempt = current.attempt { engine.close(attempt) }
            current.attempt = nil
            current.rejoined = false
            current.lastFailure = "\(error)"
            current.nextDial = .now + MasterRecovery.redialInterval
        }
        recovery = current
    }

    /// How long a wait may block before `driveRecovery` must run again (nil: not recovering).
    var recoveryWake: Duration? {
        guard let current = recovery else { return nil }
        let next = current.attempt == nil ? min(current.nextDial, current.deadline) : current.deadline
        return max(.zero, next - .now)
    }

    /// A link to `member` went silent while the master is away (see `MasterRecovery.silentMembers`).
    func recoveryNoticed(silent member: PeerID) {
        guard var current = recovery, current.silentMembers.insert(member).inserted else { return }
        if current.rejoined, let connection = current.attempt { try? tellSilent([member], on: connection) }
        recovery = current
    }

    /// The rejoin just went out on `connection`: the silent members follow it.
    private func rejoined(_ current: inout MasterRecovery, on connection: ConnectionID) throws(TransportError) {
        current.rejoined = true
        try tellSilent(current.silentMembers, on: connection)
    }

    private func tellSilent(_ members: some Sequence<PeerID>, on connection: ConnectionID) throws(TransportError) {
        for member in members {
            let message = PeerToMaster.unreachable(epoch: topology.epoch, peer: member, detail: "its links went silent while the master was away")
            try engine.sendControl(connection, address: FrameAddress(epoch: topology.epoch, opID: 0), payload: message.encoded())
        }
    }

    /// What this peer knows of its session, for the master it reaches.
    private var rejoinReport: Rejoin {
        let last = verdicts.max { $0.key < $1.key }
        let leaving = unanswered.contains { if case .leave = $0 { true } else { false } }
        return Rejoin(peer: peerID, group: group, listen: listenAddress, topology: topology, lastDecidedOp: last?.key ?? 0,
                      lastOutcome: last?.value ?? .success, lastSyncedRevision: lastSyncedRevision, leaving: leaving)
    }

    /// A frame on the connection of the attempt under way.
    func continueRecovery(_ payload: [UInt8]) {
        guard var current = recovery, let connection = current.attempt else { return }
        let address = FrameAddress(epoch: topology.epoch, opID: 0)
        if Handshake.isHandshake(payload) {
            do {
                guard var handshake = current.handshake else { throw HandshakeFailure("a handshake this peer did not open") }
                switch try handshake.receive(try Handshake(decoding: payload)) {
                case .reply(let proof): // the rejoin goes right behind the proof
                    try engine.sendControl(connection, address: address, payload: proof.encoded())
                    try engine.sendControl(connection, address: address, payload: PeerToMaster.rejoin(rejoinReport).encoded())
                    try rejoined(&current, on: connection)
                case .authenticated:
                    break
                }
                current.handshake = handshake
                recovery = current
            } catch let failure as HandshakeFailure {
                try? engine.sendControl(connection, address: address, payload: Handshake.refused(failure.reason).encoded())
                authenticationRefused = true
                engine.close(connection)
                recovery = nil
                loseMaster("\(masterName) refused this peer: \(failure.reason)")
            } catch {
                recoveryAttemptFailed("its handshake failed (\(error))")
            }
            return
        }
        switch try? MasterToPeer(decoding: payload) {
        case .resumed?:
            recovery = nil
            master = connection
            logger.notice("resumed the session with \(masterName) after \(ContinuousClock.now - current.started)")
            for message in unanswered {
                try? engine.sendControl(master, address: address, payload: message.encoded())
            }
        case .rejected(let why)?:
            engine.close(connection)
            recovery = nil
            evicted = true // the master's own word
            loseMaster("the master removed this peer: \(why)")
        default:
            recoveryAttemptFailed("it answered the rejoin with something else")
        }
    }

    /// The attempt under way ended without resuming the session: dial again shortly.
    func recoveryAttemptFailed(_ why: String) {
        guard var current = recovery, let connection = current.attempt else { return }
        engine.close(connection)
        current.attempt = nil
        current.rejoined = false
        current.lastFailure = why
        current.nextDial = .now + MasterRecovery.redialInterval
        recovery = current
    }
}
