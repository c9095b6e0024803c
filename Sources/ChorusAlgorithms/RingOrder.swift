/// The order of a ring over links of unequal speed: an asymmetric travelling-salesman problem whose
/// objective is the ring's slowest link first (a pipelined ring moves at the pace of its slowest
/// hop), then the sum of the links' costs.
///
/// Costs are directed (`costs[i][j]`: seconds per byte from member i to member j, measured by
/// `LinkMeasurement`). Every member solves the same matrix with this deterministic code, so all
/// propose the same order.
public struct RingOrder: Equatable, Sendable {
    /// Members by index into the cost matrix, starting with member 0.
    public let order: [Int]
    /// The cost of the ring's slowest link (seconds per byte).
    public let bottleneck: Double
    /// The sum of the ring's link costs.
    public let total: Double

    /// Orders of up to this many members are solved exactly (all (n-1)! orders with member 0 first:
    /// 40,320 at 9); larger ones by a heuristic.
    public static let exactLimit = 9
    /// A solved order replaces the current one only when its costs are this fraction of the
    /// current one's: a quarter better. The measurements are noisy (on loopback, four members'
    /// slowest link varied by 17% between two calls) and a ring re-formed for nothing costs an epoch.
    public static let requiredGain = 0.75

    public init(order: [Int], costs: [[Double]]) {
        self.order = order
        var bottleneck = 0.0, total = 0.0
        for (position, member) in order.enumerated() {
            let cost = costs[member][order[(position + 1) % order.count]]
            bottleneck = max(bottleneck, cost)
            total += cost
        }
        self.bottleneck = bottleneck
        self.total = total
    }

    /// Lexicographic: the slowest link, then the sum.
    public func isBetter(than other: RingOrder) -> Bool {
        bottleneck != other.bottleneck ? bottleneck < other.bottleneck : total < other.total
    }

    /// Whether this order is worth re-forming the ring for, against `current`: its slowest link
    /// is `requiredGain` faster, or no slower with a sum that is.
    public func isWorthReforming(from current: RingOrder) -> Bool {
        bottleneck < current.bottleneck * Self.requiredGain
            || (bottleneck <= current.bottleneck && total < current.total * Self.requiredGain)
    }

    /// The best order found for `costs` (n x n, the diagonal ignored). With one or two members
    /// there is one ring.
    public static func solve(costs: [[Double]]) -> RingOrder {
        let n = costs.count
        precondition(costs.allSatisfy { $0.count == n }, "the cost matrix must be square")
        if n <= 3 {
            let candidates = n == 3 ? [[0, 1, 2], [0, 2, 1]] : [Array(0 ..< n)]
            return candidates.map { RingOrder(order: $0, costs: costs) }.reduce(nil) { best, next in
                best.map { next.isBetter(than: $0) ? next : $0 } ?? next
            }!
        }
        return n <= exactLimit ? exact(costs) : heuristic(costs)
    }

    /// Every order with member 0 first, in lexicographic order (Heap's algorithm would be faster;
    /// 40,320 orders are not worth it).
    private static func exact(_ costs: [[Double]]) -> RingOrder {
        var rest = Array(1 ..< costs.count)
        var best = RingOrder(order: [0] + rest, costs: costs)
        while nextPermutation(&rest) {
            let candidate = RingOrder(order: [0] + rest, costs: costs)
            if candidate.isBetter(than: best) { best = candidate }
        }
        return best
    }

    private static func nextPermutation(_ a: inout [Int]) -> Bool {
        guard var i = a.indices.last, i > 0 else { return false }
        while i > 0 && a[i - 1] >= a[i] { i -= 1 }
        guard i > 0 else { return false }
        var j = a.count - 1
        while a[j] <= a[i - 1] { j -= 1 }
        a.swapAt(i - 1, j)
        a[i...].reverse()
        return true
    }

    /// Nearest neighbour from member 0 and the identity order, each improved by moving one member
    /// at a time to the position that improves the ring most, until no move does (at most
    /// `passes` sweeps; a move never reverses a stretch, which would change its links' costs).
    private static func heuristic(_ costs: [[Double]], passes: Int = 20) -> RingOrder {
        let n = costs.count
        var nearest = [0], left = Set(1 ..< n)
        while let next = left.min(by: { (costs[nearest.last!][$0], $0) < (costs[nearest.last!][$1], $1) }) {
            nearest.append(next)
            left.remove(next)
        }
        let improved = [Array(0 ..< n), nearest].map { start -> RingOrder in
            var best = RingOrder(order: start, costs: costs)
            for _ in 0 ..< passes {
                var moved = false
                for from in 1 ..< n {
                    var order = best.order
                    let member = order.remove(at: from)
                    for to in 1 ..< n where to != from {
                        order.insert(member, at: to)
                        let candidate = RingOrder(order: order, costs: costs)
                        if candidate.isBetter(than: best) { best = candidate; moved = true }
                        order.remove(at: to)
                    }
                }
                if !moved { break }
            }
            return best
        }
        return improved[1].isBetter(than: improved[0]) ? improved[1] : improved[0]
    }
}
