import ChorusTransport

/// The master's side of `Configuration.recoveryProbeTimeout`: probes the members a recovery waits
/// for (`MasterStateMachine.membersHoldingUpTheRecovery`), so that one that hangs fails its connection
/// within the probe's deadline and the survivors re-form once, without it, instead of waiting out
/// the hang suspicion's window.
struct RecoveryProber {
    /// How long a member may take to reach the safe point before it is probed: the others got the
    /// same verdict at the same moment, and a live member's program usually asks within a few
    /// milliseconds; a probe sooner would only cost traffic.
    static let graceBeforeProbe: Duration = .milliseconds(25)

    let answerWithin: Duration
    private var awaitedSince: [ConnectionID: ContinuousClock.Instant] = [:]
    private var lastProbe: [ConnectionID: ContinuousClock.Instant] = [:]

    init(answerWithin: Duration) { self.answerWithin = answerWithin }

    /// Whether `connection` was probed in the current recovery (its failure then means no answer).
    func probed(_ connection: ConnectionID) -> Bool { lastProbe[connection] != nil }

    /// Probes the members in `awaited` that have kept the recovery waiting past the grace, at most
    /// once per `answerWithin` each, and forgets the ones no longer awaited.
    mutating func look(at awaited: [ConnectionID], engine: TransportEngine, now: ContinuousClock.Instant = .now) {
        guard answerWithin > .zero else { return }
        if awaited.isEmpty {
            awaitedSince.removeAll(keepingCapacity: true)
            lastProbe.removeAll(keepingCapacity: true)
            return
        }
        let still = Set(awaited)
        awaitedSince = awaitedSince.filter { still.contains($0.key) }
        lastProbe = lastProbe.filter { still.contains($0.key) }
        for connection in awaited {
            let since = awaitedSince[connection] ?? now
            awaitedSince[connection] = since
            guard now - since >= Self.graceBeforeProbe, lastProbe[connection].map({ now - $0 >= answerWithin }) ?? true else { continue }
            lastProbe[connection] = now
            try? engine.probe(connection, answerWithin: answerWithin) // a closed connection reports its own failure
        }
    }

    /// How long the master may wait for its next event before the next probe is due (`idle` when
    /// none is).
    func timeUntilNextProbe(idle: Duration, now: ContinuousClock.Instant = .now) -> Duration {
        var next = now + idle
        for (connection, since) in awaitedSince {
            let due = lastProbe[connection].map { $0 + answerWithin } ?? since + Self.graceBeforeProbe
            next = min(next, due)
        }
        return max(.milliseconds(1), next - now)
    }
}
