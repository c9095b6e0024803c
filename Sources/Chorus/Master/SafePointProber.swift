import ChorusTransport

/// The master's side of `Configuration.probeTimeout`: probes the members a safe point waits for
/// (`MasterStateMachine.membersHoldingUpTheSafePoint`), so that one that hangs fails its connection
/// within the probe's deadline and the others re-form once, without it, instead of waiting out the
/// hang suspicion's window.
struct SafePointProber {
    /// How long a member may stay away from a safe point before it is probed: the others usually get
    /// there within a few milliseconds of each other, and probing sooner would only cost traffic.
    static let graceBeforeProbe: Duration = .milliseconds(25)
    /// Who holds up a safe point is looked at no more often than this (it takes a pass over the
    /// members, and the master sees events per operation per member).
    static let lookInterval: Duration = .milliseconds(5)

    let answerWithin: Duration
    private var awaitedSince: [ConnectionID: ContinuousClock.Instant] = [:]
    private var lastProbe: [ConnectionID: ContinuousClock.Instant] = [:]
    private var nextLook = ContinuousClock.now
    private var lookOwed = false

    init(answerWithin: Duration) { self.answerWithin = answerWithin }

    /// Whether `connection` was probed at the current safe point (its failure then means no answer).
    func probed(_ connection: ConnectionID) -> Bool { lastProbe[connection] != nil }

    /// Probes the members in `awaited` that have kept the safe point waiting past the grace, at most
    /// once per `answerWithin` each, and forgets the ones no longer awaited.
    mutating func look(at awaited: @autoclosure () -> [ConnectionID], engine: TransportEngine) {
        guard answerWithin > .zero else { return }
        let now = ContinuousClock.now
        guard now >= nextLook else {
            lookOwed = true
            return
        }
        nextLook = now + Self.lookInterval
        lookOwed = false
        let members = awaited()
        let still = Set(members)
        awaitedSince = awaitedSince.filter { still.contains($0.key) }
        lastProbe = lastProbe.filter { still.contains($0.key) }
        for connection in members {
            let since = awaitedSince[connection] ?? now
            awaitedSince[connection] = since
            guard now - since >= Self.graceBeforeProbe, lastProbe[connection].map({ now - $0 >= answerWithin }) ?? true else { continue }
            lastProbe[connection] = now
            try? engine.probe(connection, answerWithin: answerWithin) // a closed connection reports its own failure
        }
    }

    /// How long the master may wait for its next event before it must look again (`idle` when
    /// nothing is due).
    func timeUntilNextLook(idle: Duration) -> Duration {
        let now = ContinuousClock.now
        var next = lookOwed ? nextLook : now + idle
        for (connection, since) in awaitedSince {
            next = min(next, lastProbe[connection].map { $0 + answerWithin } ?? since + Self.graceBeforeProbe)
        }
        return max(.milliseconds(1), next - now)
    }
}
