/// Measures how fast data moves between every pair of members, in bounded time per pair, for
/// `RingOrder` (`Communicator.optimizeTopology()`).
///
/// Pairs meet in rounds of the circle method (n-1 rounds for even n, n for odd, every member in at
/// most one pair per round), so a round's pairs measure at the same time over disjoint links. A
/// pair first tells each other whether it still knows its costs from an earlier measurement (both
/// must, else they measure again). The lower rank times the round trip (the shortest of three
/// ping-pongs) and tells the other. Then both move data both ways at once, as a ring does, in
/// phases that double from `firstPhaseBytes`: each side times the phase's arrival, and the two
/// swap their times. The pair stops after the first phase whose slower direction took
/// `phaseTarget` or more beyond the round trip and moved at less than 1.25 times the last phase's
/// rate (the rate grows while TCP's slow start or the round trip limits it, and settles once the
/// link's bandwidth does), or after a phase of 8 targets, or at `maxPhaseBytes`. So on a long link
/// the data's time is measured, not the round trip's or slow start's. The cost of a direction is
/// its last phase's time, less half the round trip (when the data left), per byte.
///
/// Bound per pair: the phases up to the link's bandwidth-delay product and one or two of
/// `phaseTarget` beyond it (0.3 s for 4 members on loopback, 1.4-1.6 s for a 50 ms, 1 Gbit/s
/// link), or 8 targets plus one phase on a link too slow for the first. Phases are sent as frames
/// of at most `frameBytes` out of one small buffer and received into another (the contents are
/// never read).
public struct LinkMeasurement: Sendable {
    public let phaseTarget: Duration
    public let firstPhaseBytes: Int
    public let maxPhaseBytes: Int
    public let frameBytes: Int

    public init(phaseTarget: Duration, firstPhaseBytes: Int = 256 << 10, maxPhaseBytes: Int = 64 << 20,
                frameBytes: Int = 1 << 20) {
        precondition(firstPhaseBytes > 0 && firstPhaseBytes <= maxPhaseBytes && frameBytes > 0)
        self.phaseTarget = phaseTarget
        self.firstPhaseBytes = firstPhaseBytes
        self.maxPhaseBytes = maxPhaseBytes
        self.frameBytes = frameBytes
    }

    /// Scratch `run` needs: one frame to send from, one to receive into.
    public var scratchBytes: Int { 2 * frameBytes }

    /// What one member learned: the cost of each member's data reaching it (seconds per byte;
    /// `nil` for itself and for members whose costs it was told to keep).
    public struct Incoming: Sendable {
        public var costs: [Double?]
        /// The shortest round trip seen with each member measured (seconds; `nil` as for `costs`).
        public var roundTrips: [Double?]
        /// How many pairs this member measured (the rest were known).
        public var measuredPairs: Int
    }

    /// The member `rank` meets in `round` (nil: it sits out), out of `rounds(worldSize:)`.
    public static func partner(of rank: Int, inRound round: Int, worldSize n: Int) -> Int? {
        let slots = n + n % 2 // an odd world gets a ghost member, who sits out with its partner
        let spin = slots - 1
        let partner: Int
        if rank == spin {
            partner = round
        } else if rank == round {
            partner = spin
        } else {
            partner = ((2 * round - rank) % spin + spin) % spin
        }
        return partner < n && partner != rank ? partner : nil
    }

    /// Round trips timed per pair.
    static let pings = 3
    /// A phase whose rate grew less than this over the last one is past TCP's slow start.
    static let settledGrowth = 1.25
    /// A phase this many targets long ends the pair whatever its rate did (a slow link).
    static let longPhase = 8.0

    public static func rounds(worldSize n: Int) -> Int { n < 2 ? 0 : n + n % 2 - 1 }

    /// The most lanes `lanes(secondsPerByte:roundTrip:window:)` gives.
    public static let maximumAutomaticLanes = 4

    /// How many parallel connections a link needs. One connection moves at most a window (the
    /// socket buffer) per round trip; a link whose measured rate reaches 3/4 of that is bound by the
    /// window, not by its bandwidth, and gets connections for twice its measured bandwidth-delay
    /// product, rounded to the nearest (at least 2, at most `maximumAutomaticLanes`). Measured on
    /// the WAN emulation (50 ms, 1 Gbit/s, 4 MiB buffers): 1, 2 and 4 connections took 0.680,
    /// 0.607 and 0.625 s for 64 MiB.
    public static func lanes(secondsPerByte cost: Double, roundTrip: Double, window: Int) -> Int {
        guard cost > 0, roundTrip > 0, window > 0 else { return 1 }
        let inFlight = roundTrip / cost // bytes the link held in flight as measured
        guard inFlight >= 0.75 * Double(window) else { return 1 }
        return min(maximumAutomaticLanes, max(2, Int((2 * inFlight / Double(window)).rounded())))
    }

    /// Runs this member's pairs. `known(j)`: this member still holds both directions' costs between
    /// it and member j.
    public func run<Links: CollectiveLinks>(links: Links, known: (Int) -> Bool,
                                            scratch: UnsafeMutableRawPointer) throws -> Incoming {
        let n = links.worldSize, me = links.rank
        var incoming = Incoming(costs: Array(repeating: nil, count: n), roundTrips: Array(repeating: nil, count: n), measuredPairs: 0)
        let outgoing = UnsafeRawBufferPointer(start: scratch, count: frameBytes)
        let arriving = UnsafeMutableRawBufferPointer(start: scratch + frameBytes, count: frameBytes)
        // [0, 1]: what this member says, [2, 3]: what it hears.
        var words = [UInt64](repeating: 0, count: 4)
        for round in 0 ..< Self.rounds(worldSize: n) {
            guard let peer = Self.partner(of: me, inRound: round, worldSize: n) else { continue }
            var tag: UInt32 = 0
            /// Tells the partner two numbers and hears its two.
            func swap(_ first: UInt64, _ second: UInt64) throws -> (UInt64, UInt64) {
                (words[0], words[1]) = (first, second)
                try words.withUnsafeMutableBytes { bytes in
                    let heard = try links.receive(into: UnsafeMutableRawBufferPointer(rebasing: bytes[16 ..< 32]), from: peer, tag: tag)
                    let said = try links.send(UnsafeRawBufferPointer(rebasing: bytes[0 ..< 16]), to: peer, tag: tag)
                    try links.wait(heard)
                    try links.wait(said)
                }
                tag += 1
                return (words[2], words[3])
            }
            let mine: UInt64 = known(peer) ? 1 : 0
            if try swap(mine, 0).0 == 1 && mine == 1 { continue }
            incoming.measuredPairs += 1
            // The round trip: the lower rank pings and the higher answers once the ping is in (a
            // swap would time the skew between the two ends), the shortest of three; then both
            // hold the lower's number.
            var roundTrip = UInt64.max
            for _ in 0 ..< Self.pings {
                try words.withUnsafeMutableBytes { bytes in
                    let ping = UnsafeRawBufferPointer(rebasing: bytes[0 ..< 16])
                    let heard = try links.receive(into: UnsafeMutableRawBufferPointer(rebasing: bytes[16 ..< 32]), from: peer, tag: tag)
                    let started = ContinuousClock.now
                    if me < peer {
                        let said = try links.send(ping, to: peer, tag: tag)
                        try links.wait(heard)
                        roundTrip = min(roundTrip, Self.nanoseconds(since: started))
                        try links.wait(said)
                    } else {
                        try links.wait(heard)
                        try links.wait(try links.send(ping, to: peer, tag: tag))
                    }
                }
                tag += 1
            }
            roundTrip = min(roundTrip, try swap(0, roundTrip).1)
            var bytes = firstPhaseBytes
            var previousRate: Double? // the slower direction's bytes per nanosecond, last phase
            while true {
                let started = ContinuousClock.now
                var requests: [Links.Request] = []
                var left = bytes
                while left > 0 {
                    let frame = min(left, frameBytes)
                    requests.append(try links.receive(into: UnsafeMutableRawBufferPointer(rebasing: arriving[..<frame]), from: peer, tag: tag))
                    requests.append(try links.send(UnsafeRawBufferPointer(rebasing: outgoing[..<frame]), to: peer, tag: tag))
                    tag += 1
                    left -= frame
                }
                // Receives and sends alternate; the last receive's end is the phase's arrival.
                try links.wait(requests[requests.count - 2])
                let arrival = Self.nanoseconds(since: started)
                for request in requests { try links.wait(request) }
                let theirArrival = try swap(arrival, 0).0
                // Both ends decide from the same numbers: the slower direction's time beyond the
                // round trip, and its rate against the last phase's.
                let latency = Double(roundTrip)
                let beyond = max(1, Double(max(arrival, theirArrival)) - latency)
                let rate = Double(bytes) / beyond
                let target = phaseTarget / .nanoseconds(1)
                let settled = previousRate.map { rate < $0 * Self.settledGrowth } ?? false
                if bytes >= maxPhaseBytes || (beyond >= target && settled) || beyond >= target * Self.longPhase {
                    // The data started half a round trip before its first byte could arrive.
                    let moving = max(Double(arrival) - latency / 2, Double(arrival) / 2)
                    incoming.costs[peer] = moving * 1e-9 / Double(bytes)
                    incoming.roundTrips[peer] = latency * 1e-9
                    break
                }
                previousRate = rate
                bytes = min(bytes * 2, maxPhaseBytes)
            }
        }
        return incoming
    }

    private static func nanoseconds(since start: ContinuousClock.Instant) -> UInt64 {
        UInt64(max(1, (ContinuousClock.now - start) / .nanoseconds(1)))
    }
}
