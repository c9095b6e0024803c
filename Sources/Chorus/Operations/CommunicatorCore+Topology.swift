import ChorusAlgorithms
import ChorusProtocol

/// A link between two members, one way, by peer id (ranks change between epochs; ids do not).
struct DirectedLink: Hashable {
    let from: PeerID
    let to: PeerID
}

/// What `LinkMeasurement` found for one direction of a link.
struct MeasuredLink: Equatable {
    let secondsPerByte: Double
    let roundTrip: Double
}

/// What every member of an `optimizeTopology()` must pass alike, as the measurement's descriptor
/// carries it: the phase target in microseconds, and whether known costs are measured again (bit 63).
struct LinkMeasurementSettings: Equatable {
    let phaseTarget: Duration
    let remeasure: Bool

    init(phaseTarget: Duration, remeasure: Bool) {
        self.phaseTarget = phaseTarget
        self.remeasure = remeasure
    }

    init(detail: UInt64) {
        phaseTarget = .microseconds(Int64(detail & ~(1 << 63)))
        remeasure = detail >> 63 == 1
    }

    var detail: UInt64 {
        UInt64(phaseTarget / .microseconds(1)) | (remeasure ? 1 << 63 : 0)
    }
}

extension Core {
    /// A safe point: asks the master to form the next epoch (in `ringOrder` when not empty, see
    /// `PeerToMaster.updateTopology`) and connects its links.
    func reform(session: PeerSession, minimumWorldSize: Int, admitting: Bool, ringOrder: [PeerID] = []) throws {
        settleAllInFlight() // a safe point comes after every operation started before it
        try session.sendToMaster(.updateTopology(epoch: session.topology.epoch,
                                                 minimumWorldSize: UInt32(clamping: minimumWorldSize),
                                                 admitting: admitting, ringOrder: ringOrder))
        try session.awaitTopology(deadline: .now + session.configuration.admissionTimeout)
    }

    /// Measures the links this member does not know yet (`LinkMeasurement`, one operation), gathers
    /// every member's costs (an all-gather, so all hold the same matrix), solves the ring order
    /// (`RingOrder`) and re-forms the group in it, or in the current order when the solved one is
    /// not `RingOrder.requiredGain` better. Costs are kept per pair of peer ids only once both
    /// operations succeeded, so every member keeps the same ones.
    func optimizeTopology(settings: LinkMeasurementSettings, minimumWorldSize: Int,
                          admitting: Bool) throws -> TopologyOptimization {
        let session = try readySession()
        let ids = session.topology.members.map(\.id)
        let n = ids.count
        var current = RingOrder(order: Array(0 ..< n), costs: Array(repeating: Array(repeating: 0, count: n), count: n))
        var solved = current
        var measuredPairs = 0
        if n >= 2 {
            let me = session.rank
            let measurement = LinkMeasurement(phaseTarget: settings.phaseTarget)
            let known = { (peer: Int) -> Bool in
                !settings.remeasure && self.linkCosts[DirectedLink(from: ids[peer], to: ids[me])] != nil
                    && self.linkCosts[DirectedLink(from: ids[me], to: ids[peer])] != nil
            }
            let descriptor = OperationDescriptor(collective: Collective.measureLinks.rawValue, dataType: 0, reduceOp: 0,
                                                 count: 0, detail: settings.detail)
            // Bounded like any collective (a pair's phases are bounded, see `LinkMeasurement`).
            let deadline = ContinuousClock.now + session.configuration.operationTimeout
            var incoming: LinkMeasurement.Incoming?
            try runToVerdict(session: session, opID: session.takeOperationID(), deadline: deadline, descriptor: descriptor,
                             route: .everyPair, restore: nil) { links in
                incoming = try measurement.run(links: links, known: known,
                                               scratch: scratch.pointer(bytes: measurement.scratchBytes))
            }
            guard let incoming else { preconditionFailure("a measurement that succeeded returns its costs") }
            measuredPairs = incoming.measuredPairs
            // Row j of the gathered matrix: what reaches member j from each member (seconds per
            // byte for n members, then the round trips).
            let row = (0 ..< n).map { j -> MeasuredLink in
                if j == me { return MeasuredLink(secondsPerByte: 0, roundTrip: 0) }
                if let cost = incoming.costs[j], let roundTrip = incoming.roundTrips[j] {
                    return MeasuredLink(secondsPerByte: cost, roundTrip: roundTrip)
                }
                return linkCosts[DirectedLink(from: ids[j], to: ids[me])]!
            }
            let mine = row.map(\.secondsPerByte) + row.map(\.roundTrip)
            var rows = [Double](repeating: 0, count: 2 * n * n)
            try mine.withUnsafeBytes { mine in
                try rows.withUnsafeMutableBytes { all in
                    try run { session in
                        allGatherPlan(session: session, input: mine.baseAddress!, output: all.baseAddress!, count: 2 * n, dataType: .float64)
                    }
                }
            }
            let costs = (0 ..< n).map { from in (0 ..< n).map { to in rows[to * 2 * n + from] } }
            for from in 0 ..< n {
                for to in 0 ..< n where from != to {
                    linkCosts[DirectedLink(from: ids[from], to: ids[to])] =
                        MeasuredLink(secondsPerByte: costs[from][to], roundTrip: rows[to * 2 * n + n + from])
                }
            }
            current = RingOrder(order: Array(0 ..< n), costs: costs)
            solved = RingOrder.solve(costs: costs)
        }
        let reordered = solved.isWorthReforming(from: current)
        let proposal = (reordered ? solved : current).order.map { ids[$0] }
        session.machine.automaticLanes = automaticLanes(from: session.peerID, window: session.configuration.socketBufferBytes)
        try reform(session: session, minimumWorldSize: minimumWorldSize, admitting: admitting, ringOrder: proposal)
        return TopologyOptimization(ring: session.topology.members.map(\.id), reordered: reordered,
                                    measuredPairs: measuredPairs, rightLanes: session.links?.right.count ?? 0,
                                    slowestLinkBefore: Self.throughput(current.bottleneck),
                                    slowestLinkAfter: Self.throughput(reordered ? solved.bottleneck : current.bottleneck))
    }

    /// The lanes to dial to each member as a right neighbour (`LinkMeasurement.lanes`), for the
    /// links this member measured or learned. A socket buffer of 0 leaves it to the kernel, whose
    /// auto-tuning stops at 4 MiB here (`tcp_wmem`).
    private func automaticLanes(from me: PeerID, window: Int) -> [PeerID: Int] {
        var lanes: [PeerID: Int] = [:]
        for (link, measured) in linkCosts where link.from == me {
            lanes[link.to] = LinkMeasurement.lanes(secondsPerByte: measured.secondsPerByte, roundTrip: measured.roundTrip,
                                                   window: window > 0 ? window : 4 << 20)
        }
        return lanes
    }

    /// Bytes per second for a cost in seconds per byte (0: not measured).
    private static func throughput(_ secondsPerByte: Double) -> Double {
        secondsPerByte > 0 ? 1 / secondsPerByte : 0
    }
}
