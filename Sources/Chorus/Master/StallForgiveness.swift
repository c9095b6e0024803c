import ChorusTransport

/// A master that was itself stalled (SIGSTOP, swapped out, its VM paused) cannot judge the
/// connections that closed meanwhile: its members found it silent, closed them, and dialed it again
/// to resume their sessions (the kernel queued those dials during the stall). So for a moment after
/// such a stall, a member whose connection closed is not lost yet: it has `grace` to rejoin (its
/// session then moves to the new connection) before the master counts it lost. The grace is short
/// because a crash during the stall looks the same and must not wait long for its verdict.
struct StallForgiveness {
    let grace: Duration
    /// How much longer than asked a wait must have taken to count as a stall of this process.
    static let stall: Duration = .seconds(1)
    /// How long after a stall closed connections are forgiven (their events arrive in milliseconds).
    static let forgivingFor: Duration = .seconds(1)
    private var forgivingUntil: ContinuousClock.Instant?
    /// Closed connections of members, with when each counts as lost.
    private var deferred: [ConnectionID: ContinuousClock.Instant] = [:]

    /// - Parameter grace: how long a forgiven member has to rejoin: its dial is already queued, so a
    ///   second is plenty; capped by the master window.
    init(window: Duration) { grace = min(window, .seconds(1)) }

    /// When the previous wait for events returned.
    private var lastTurn = ContinuousClock.now

    /// Records a wait for events, asked to last at most `asked`, that just returned; how long this
    /// process was stalled if the turn (the work after the previous wait, then this wait) took far
    /// longer. The work is counted too: a stop can land in it as well as in the wait.
    mutating func waited(_ asked: Duration) -> Duration? {
        let took = ContinuousClock.now - lastTurn
        lastTurn = .now
        guard took > asked + Self.stall else { return nil }
        forgivingUntil = .now + Self.forgivingFor
        return took - asked
    }

    /// True when the loss of a member's connection waits for its rejoin (just after a stall).
    mutating func forgive(_ connection: ConnectionID) -> Bool {
        guard let until = forgivingUntil, ContinuousClock.now < until else { return false }
        deferred[connection] = .now + grace
        return true
    }

    /// The forgiven connections whose members did not come back in time.
    mutating func expired() -> [ConnectionID] {
        let now = ContinuousClock.now
        let due = deferred.filter { $0.value <= now }.map(\.key)
        due.forEach { deferred[$0] = nil }
        return due
    }
}
