/// A peer that lost its master connection keeps its session and dials the master's address again
/// (`Settings.recoveryWindow`), without blocking: the shell's wait calls `tick` between events, so
/// links, hellos and verdicts are handled meanwhile. The first message on the new connection is
/// `rejoin`; the master answers `resumed` (the same master moved the session to the new connection,
/// or a restarted one re-adopted the group) or `rejected` (it does not count this peer: `evicted`).
/// After `resumed` the peer sends again what the master had not answered (`unanswered`).
extension PeerStateMachine {
    struct Recovery: Sendable {
        /// Why the old connection ended.
        let cause: String
        let started: ContinuousClock.Instant
        let deadline: ContinuousClock.Instant
        /// The dial under way, if any.
        var attempt: ConnectionNumber?
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
        static var redialInterval: Duration { .milliseconds(50) }
        /// Why an attempt failed when the master's kernel accepted the dial but the master said nothing.
        static var silentMaster: String { "it accepted a connection but did not answer (paused or overloaded?)" }
    }

    /// True while the peer tries to reach a master again.
    public var isRecovering: Bool { recovery != nil }

    /// The master connection failed: try to reach a master again, unless this peer never registered
    /// (there is no session to resume).
    func beginRecovery(after error: String, now: ContinuousClock.Instant) -> [Action] {
        if masterHandshake != nil { return loseMaster("\(settings.masterName) closed the connection during the handshake: \(error)") }
        guard peerID != 0 else { return loseMaster("connection to the master failed before it registered this peer: \(error)") }
        recovery = Recovery(cause: error, started: now, deadline: now + settings.recoveryWindow, nextDial: now)
        // The master that answers may not know of a fence the lost one set on the old connection,
        // and it adopts the newest verdict the members hold: the operations already begun are
        // decided by the master only (DESIGN.md, "Success without the master").
        committableFrom = nextOpID
        return [.log(.warning, "lost \(settings.masterName) (\(error)); trying to reach it again for \(settings.recoveryWindow)")]
            + tick(now: now)
    }

    /// Dials when it is time, and gives up at the window's end.
    public func tick(now: ContinuousClock.Instant) -> [Action] {
        guard var current = recovery else { return [] }
        if now >= current.deadline {
            var actions: [Action] = []
            if let attempt = current.attempt {
                actions.append(.close(attempt))
                current.lastFailure = Recovery.silentMaster
            }
            recovery = nil
            return actions + loseMaster("lost \(settings.masterName) (\(current.cause)) and could not resume "
                                        + "the session within \(current.deadline - current.started): \(current.lastFailure)")
        }
        guard current.attempt == nil, now >= current.nextDial else { return [] }
        return [.connectToMaster(timeout: min(settings.connectTimeout, current.deadline - now))]
    }

    /// How long the shell may block before `tick` must run again (nil: not recovering).
    public func wakeDelay(now: ContinuousClock.Instant) -> Duration? {
        guard let current = recovery else { return nil }
        let next = current.attempt == nil ? min(current.nextDial, current.deadline) : current.deadline
        return max(.zero, next - now)
    }

    /// The dial asked for by `connectToMaster` connected: open the handshake, or rejoin at once.
    public func masterDialed(_ connection: ConnectionNumber) -> [Action] {
        guard var current = recovery, current.attempt == nil else { return [.close(connection)] }
        current.attempt = connection
        current.handshake = settings.secret.map(ConnectorHandshake.init)
        if let handshake = current.handshake {
            recovery = current
            return [.sendHandshake(connection, handshake.opening)]
        }
        let actions = rejoin(&current, on: connection)
        recovery = current
        return actions
    }

    /// The dial asked for by `connectToMaster` failed: dial again shortly.
    public func masterDialFailed(_ why: String, now: ContinuousClock.Instant) -> [Action] {
        guard var current = recovery else { return [] }
        current.lastFailure = why
        current.nextDial = now + Recovery.redialInterval
        recovery = current
        return []
    }

    /// A link to `member` went silent while the master is away (see `Recovery.silentMembers`).
    func recoveryNoticed(silent member: PeerID) -> [Action] {
        guard var current = recovery, current.silentMembers.insert(member).inserted else { return [] }
        recovery = current
        guard current.rejoined, let connection = current.attempt else { return [] }
        return tellSilent([member], on: connection)
    }

    /// Sends the rejoin on `connection`, the silent members right behind it.
    private func rejoin(_ current: inout Recovery, on connection: ConnectionNumber) -> [Action] {
        current.rejoined = true
        return [.sendToMaster(connection, .rejoin(rejoinReport))] + tellSilent(current.silentMembers, on: connection)
    }

    private func tellSilent(_ members: some Sequence<PeerID>, on connection: ConnectionNumber) -> [Action] {
        members.map {
            .sendToMaster(connection, .unreachable(epoch: topology.epoch, peer: $0, detail: "its links went silent while the master was away"))
        }
    }

    /// What this peer knows of its session, for the master it reaches.
    private var rejoinReport: Rejoin {
        // The newest verdict, or the newest operation the members committed among themselves.
        let last = verdicts.max { $0.key < $1.key }.map { (opID: $0.key, outcome: $0.value) }
        let newest = latestSuccess > (last?.opID ?? 0) ? (opID: latestSuccess, outcome: Outcome.success) : last
        let leaving = unanswered.contains { if case .leave = $0 { true } else { false } }
        return Rejoin(peer: peerID, group: group, peerGroup: settings.peerGroup, listen: listenAddress, topology: topology, lastDecidedOp: newest?.opID ?? 0,
                      lastOutcome: newest?.outcome ?? .success, lastSyncedRevision: lastSyncedRevision, leaving: leaving)
    }

    /// A frame on the connection of the attempt under way.
    func continueRecovery(_ payload: [UInt8], now: ContinuousClock.Instant) -> [Action] {
        guard var current = recovery, let connection = current.attempt else { return [] }
        if Handshake.isHandshake(payload) {
            do {
                guard var handshake = current.handshake else { throw HandshakeFailure("a handshake this peer did not open") }
                var actions: [Action] = []
                switch try handshake.receive(try Handshake(decoding: payload)) {
                case .reply(let proof): // the rejoin goes right behind the proof
                    actions = [.sendHandshake(connection, proof)] + rejoin(&current, on: connection)
                case .authenticated:
                    break
                }
                current.handshake = handshake
                recovery = current
                return actions
            } catch let failure as HandshakeFailure {
                authenticationRefused = true
                recovery = nil
                return [.sendHandshake(connection, .refused(failure.reason)), .close(connection)]
                    + loseMaster("\(settings.masterName) refused this peer: \(failure.reason)")
            } catch {
                return recoveryAttemptFailed("its handshake failed (\(error))", now: now)
            }
        }
        switch try? MasterToPeer(decoding: payload) {
        case .resumed?:
            recovery = nil
            master = connection
            return [.log(.notice, "resumed the session with \(settings.masterName) after \(now - current.started)")]
                + unanswered.map { .sendToMaster(connection, $0) }
        case .rejected(let why)?:
            recovery = nil
            evicted = true // the master's own word
            return [.close(connection)] + loseMaster("the master removed this peer: \(why)")
        default:
            return recoveryAttemptFailed("it answered the rejoin with something else", now: now)
        }
    }

    /// The attempt under way ended without resuming the session: dial again shortly.
    func recoveryAttemptFailed(_ why: String, now: ContinuousClock.Instant) -> [Action] {
        guard var current = recovery, let connection = current.attempt else { return [] }
        current.attempt = nil
        current.rejoined = false
        current.lastFailure = why
        current.nextDial = now + Recovery.redialInterval
        recovery = current
        return [.close(connection)]
    }
}
