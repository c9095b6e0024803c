import ChorusAlgorithms
import ChorusTestSupport
import Synchronization
import Testing

/// The ring order solver (`RingOrder`) and the pairwise link measurement (`LinkMeasurement`) that
/// feeds it, without sockets.
@Suite struct RingOrderTests {
    /// A seeded matrix of distinct costs (seconds per byte), asymmetric.
    static func costs(_ n: Int, seed: UInt64) -> [[Double]] {
        var state = seed | 1
        return (0 ..< n).map { i in
            (0 ..< n).map { j in
                state = state &* 6364136223846793005 &+ 1442695040888963407
                return i == j ? 0 : 1e-9 * Double(1 + (state >> 33) % 1000) + 1e-15 * Double(i * n + j)
            }
        }
    }

    /// Every order with member 0 first, the slow way (recursion), for comparison.
    static func bruteForce(_ costs: [[Double]]) -> RingOrder {
        var best: RingOrder?
        func extend(_ order: [Int], _ left: Set<Int>) {
            if left.isEmpty {
                let candidate = RingOrder(order: order, costs: costs)
                if best.map({ candidate.isBetter(than: $0) }) ?? true { best = candidate }
                return
            }
            for next in left.sorted() { extend(order + [next], left.subtracting([next])) }
        }
        extend([0], Set(1 ..< costs.count))
        return best!
    }

    @Test(arguments: Array(2 ... 8))
    func smallRingsAreSolvedExactly(n: Int) {
        for seed in 1 ... 5 as ClosedRange<UInt64> {
            let costs = Self.costs(n, seed: seed * 31 + UInt64(n))
            let solved = RingOrder.solve(costs: costs)
            let best = Self.bruteForce(costs)
            #expect(solved.bottleneck == best.bottleneck && solved.total == best.total, "n=\(n) seed \(seed): \(solved.order) vs \(best.order)")
            #expect(solved.order.first == 0 && Set(solved.order) == Set(0 ..< n) && solved.order.count == n)
        }
    }

    /// Above the exact limit: a planted ring of fast links among slow ones is found.
    @Test(arguments: [10, 16, 40])
    func largerRingsFindAPlantedFastRing(n: Int) {
        var costs = Self.costs(n, seed: UInt64(n))
        for i in 0 ..< n { for j in 0 ..< n where i != j { costs[i][j] += 1e-6 } } // every link slow
        // A fast ring in a scrambled order: i -> (i * 7 + 3) mod n over a permutation.
        let planted = (0 ..< n).map { ($0 * 7 + 3) % n }
        let permutation = (0 ..< n).sorted { (($0 * 13 + 5) % n) < (($1 * 13 + 5) % n) }
        for k in 0 ..< n { costs[permutation[planted[k]]][permutation[planted[(k + 1) % n]]] = 1e-9 * Double(1 + k % 5) }
        let solved = RingOrder.solve(costs: costs)
        #expect(solved.bottleneck <= 5e-9, "n=\(n): \(solved.order), slowest \(solved.bottleneck)")
        #expect(Set(solved.order) == Set(0 ..< n) && solved.order.count == n && solved.order.first == 0)
        #expect(RingOrder.solve(costs: costs) == solved) // deterministic
    }

    /// The slowest link decides, not the sum: the ring with the smallest sum here crosses one very
    /// slow link, and the one chosen has only medium links.
    @Test func theSlowestLinkDecidesBeforeTheSum() {
        let slow = 20.0, medium = 10.0, fast = 1.0
        var costs = Array(repeating: Array(repeating: 200.0, count: 5), count: 5)
        for (a, b) in [(0, 1), (1, 2), (2, 3), (3, 4)] { costs[a][b] = fast } // 0 1 2 3 4, then 4 -> 0 is slow
        costs[4][0] = slow
        for (a, b) in [(0, 2), (2, 4), (4, 1), (1, 3), (3, 0)] { costs[a][b] = medium }
        let solved = RingOrder.solve(costs: costs)
        #expect(solved.order == [0, 2, 4, 1, 3] && solved.bottleneck == medium, "\(solved)")
        #expect(RingOrder(order: [0, 1, 2, 3, 4], costs: costs).total < solved.total)
    }

    @Test func aNearlyEqualOrderIsNotWorthReforming() {
        let current = RingOrder(order: [0, 1, 2, 3], costs: [[0, 1, 5, 5], [5, 0, 1, 5], [5, 5, 0, 1.05], [1, 5, 5, 0]])
        let better = RingOrder(order: [0, 1, 2, 3], costs: [[0, 1, 5, 5], [5, 0, 1, 5], [5, 5, 0, 1.0], [1, 5, 5, 0]])
        #expect(!better.isWorthReforming(from: current))
        // 19% faster is still within the noise this machine's loopback showed (17%).
        let somewhatBetter = RingOrder(order: [0, 1, 2, 3], costs: [[0, 0.85, 5, 5], [5, 0, 0.85, 5], [5, 5, 0, 0.85], [0.85, 5, 5, 0]])
        #expect(!somewhatBetter.isWorthReforming(from: current))
        let muchBetter = RingOrder(order: [0, 1, 2, 3], costs: [[0, 0.5, 5, 5], [5, 0, 0.5, 5], [5, 5, 0, 0.5], [0.5, 5, 5, 0]])
        #expect(muchBetter.isWorthReforming(from: current))
    }

    @Test(arguments: Array(2 ... 9))
    func theRoundsMeetEveryPairOnce(n: Int) {
        var met: [Set<Int>] = []
        for round in 0 ..< LinkMeasurement.rounds(worldSize: n) {
            var busy = Set<Int>()
            for rank in 0 ..< n {
                guard let partner = LinkMeasurement.partner(of: rank, inRound: round, worldSize: n) else { continue }
                #expect(LinkMeasurement.partner(of: partner, inRound: round, worldSize: n) == rank)
                #expect(busy.insert(rank).inserted)
                if rank < partner { met.append([rank, partner]) }
            }
        }
        #expect(met.count == n * (n - 1) / 2 && Set(met).count == met.count, "n=\(n): \(met)")
    }

    /// Over in-process links every member ends with a positive cost from every other member; pairs
    /// both ends know are skipped, and a pair only one end knows is measured.
    @Test(arguments: [3, 4, 5])
    func theMeasurementCostsEveryPairItDoesNotKnow(n: Int) {
        let measurement = LinkMeasurement(phaseTarget: .milliseconds(2), firstPhaseBytes: 4096, maxPhaseBytes: 65536, frameBytes: 16384)
        for knownPairs in [Set<Set<Int>>(), [[0, 1]]] {
            let fabric = InProcessFabric(worldSize: n, seed: UInt64(n))
            let results = Mutex<[LinkMeasurement.Incoming?]>(Array(repeating: nil, count: n))
            let errors = InProcessFabric.run(fabric) { links in
                var scratch = [UInt8](repeating: 0, count: measurement.scratchBytes)
                // Rank 1 claims to know rank 2 as well: rank 2 does not, so they measure.
                let known = { (peer: Int) in knownPairs.contains([links.rank, peer]) || (!knownPairs.isEmpty && links.rank == 1 && peer == 2) }
                let incoming = try scratch.withUnsafeMutableBytes { try measurement.run(links: links, known: known, scratch: $0.baseAddress!) }
                results.withLock { $0[links.rank] = incoming }
            }
            #expect(errors.allSatisfy { $0 == nil }, "\(errors)")
            let incoming = results.withLock { $0 }.map { $0! }
            for rank in 0 ..< n {
                for peer in 0 ..< n where peer != rank {
                    let skipped = knownPairs.contains([rank, peer])
                    #expect((incoming[rank].costs[peer] == nil) == skipped, "n=\(n) \(rank) from \(peer): \(incoming[rank].costs)")
                    #expect(incoming[rank].costs[peer].map { $0 > 0 } ?? true)
                }
                #expect(incoming[rank].costs[rank] == nil)
                #expect(incoming[rank].measuredPairs == n - 1 - (knownPairs.contains { $0.contains(rank) } ? 1 : 0))
            }
        }
    }

    /// Lanes: one unless a connection's window bounded the measured rate; then enough for twice the
    /// measured bandwidth-delay product, 2 to 4.
    @Test func aLinkBoundByTheWindowGetsMoreLanes() {
        let window = 4 << 20
        // 50 ms at the rate one 4 MiB window allows (the WAN emulation's 1 Gbit/s link measured so).
        #expect(LinkMeasurement.lanes(secondsPerByte: 0.05 / Double(window), roundTrip: 0.05, window: window) == 2)
        // The same round trip at a tenth of that rate: the link, not the window, was the bound.
        #expect(LinkMeasurement.lanes(secondsPerByte: 0.5 / Double(window), roundTrip: 0.05, window: window) == 1)
        // Loopback: microseconds of round trip, gigabytes a second.
        #expect(LinkMeasurement.lanes(secondsPerByte: 1 / 3e9, roundTrip: 50e-6, window: window) == 1)
        // More in flight than a window can be (a measurement across several windows): capped.
        #expect(LinkMeasurement.lanes(secondsPerByte: 0.01 / Double(window), roundTrip: 0.05, window: window) == 4)
        #expect(LinkMeasurement.lanes(secondsPerByte: 0, roundTrip: 0.05, window: window) == 1)
    }
}
