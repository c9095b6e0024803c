import ChorusProtocol

/// What `Communicator.optimizeTopology()` did.
public struct TopologyOptimization: Sendable, Equatable {
    /// The new epoch's members in ring order (peers admitted at this safe point come last).
    public let ring: [PeerID]
    /// Whether the members proposed a new order (false: the current one was within
    /// `RingOrder.requiredGain` of the best found, or the world was too small to choose).
    public let reordered: Bool
    /// How many of this member's pairs were measured; the others' costs were known.
    public let measuredPairs: Int
    /// The connections this member dials to its right neighbour in the new epoch (with automatic
    /// lanes, `Configuration.connectionsPerPeer` 0, what the measured link needs; 0 alone).
    public let rightLanes: Int
    /// The slowest link of the ring before and after, as measured (bytes per second; 0 for a member
    /// alone, where nothing is measured).
    public let slowestLinkBefore: Double
    public let slowestLinkAfter: Double
}

extension Communicator {
    /// A safe point that also orders the ring by measured link speed: every member calls it.
    ///
    /// Members measure how fast data moves between every pair they have not measured before (both
    /// ways at once, in rounds of disjoint pairs, each pair for about twice `measuringFor`), share
    /// the costs, solve the ring order whose slowest link is fastest (exactly up to 9 members, by a
    /// heuristic above), and re-form the group in it, as `updateTopology()` does (waiting peers are
    /// admitted at the end of the ring; their links are measured at the next call). Every member
    /// ends with the same order, and ranks follow it (a member's rank may change, as at any
    /// re-forming). A member that joins later has its pairs measured then; pass
    /// `remeasure` to measure every pair again after the network changed. With automatic lanes
    /// (`Configuration.connectionsPerPeer` 0, the default) each member also dials as many
    /// connections to its right neighbour as the measured link needs: more than one where a single
    /// connection's window, not the link, bounded the rate (a long fat pipe).
    /// - Parameters:
    ///   - measuringFor: how long a pair's last measuring phase runs at least (1 ms to 10 s); every
    ///     member must pass the same.
    ///   - remeasure: measure known pairs again; every member must pass the same.
    ///   - minimumWorldSize: as in `updateTopology(minimumWorldSize:admitting:)`.
    ///   - admitting: as in `updateTopology(minimumWorldSize:admitting:)`.
    /// - Returns: the new ring and what was measured.
    /// - Throws: `invalidArgument`; `topologyUpdateRequired` when a collective of this epoch
    ///   aborted (call `updateTopology()` first); `aborted` (retryable: a member was lost while
    ///   measuring; the order is unchanged, call `updateTopology()`), or the errors of
    ///   `updateTopology()`.
    @discardableResult
    public func optimizeTopology(measuringFor: Duration = .milliseconds(50), remeasure: Bool = false,
                                 minimumWorldSize: Int = 1, admitting: Bool = true) throws -> TopologyOptimization {
        guard measuringFor >= .milliseconds(1) && measuringFor <= .seconds(10) else {
            throw ChorusError.invalidArgument("measuringFor \(measuringFor) is outside 1 ms ... 10 s")
        }
        let settings = LinkMeasurementSettings(phaseTarget: measuringFor, remeasure: remeasure)
        return try withCore { core throws in
            try core.optimizeTopology(settings: settings, minimumWorldSize: minimumWorldSize, admitting: admitting)
        }
    }

    /// Async form of `optimizeTopology(measuringFor:remeasure:minimumWorldSize:admitting:)`.
    @discardableResult
    public func optimizeTopology(measuringFor: Duration = .milliseconds(50), remeasure: Bool = false,
                                 minimumWorldSize: Int = 1, admitting: Bool = true) async throws -> TopologyOptimization {
        try await offload(queue) { () throws in
            try self.optimizeTopology(measuringFor: measuringFor, remeasure: remeasure,
                                      minimumWorldSize: minimumWorldSize, admitting: admitting)
        }
    }
}
