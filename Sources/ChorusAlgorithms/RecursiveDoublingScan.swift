import CChorusKernels

/// All-Scan by recursive doubling (Hillis-Steele over ranks), for small, latency-bound calls:
/// ceil(log2 n) rounds instead of the chain's n-1 hops.
///
/// Terms (position q along the scan's direction; d = 1, 2, 4, ...): before round d, a rank's
/// *window* W_q folds positions (q-d, q] and its *exclusive part* E_q folds (q-d, q); in the round it
/// sends W_q to position q+d and receives W_{q-d}, then W_q = W_{q-d} op W_q and E_q = W_{q-d} op E_q
/// (earlier positions always on the left). For the affine operator a window is a pair (decay
/// product, state), so each message carries decayCount + count elements, and combining x then y is
/// (a_y·a_x, a_y·b_x + b_y). The fold order differs from the chain's, so results are the same sums
/// rounded differently; every rank's result is its own, so nothing needs to agree bitwise across ranks.
public struct RecursiveDoublingScan: Sendable {
    public let count: Int
    public let dataType: DataType
    public let op: ScanOperator
    public let decayCount: Int
    public let reverse: Bool

    public init(count: Int, dataType: DataType, op: ScanOperator, decayCount: Int, reverse: Bool) {
        self.count = count
        self.dataType = dataType
        self.op = op
        self.decayCount = decayCount
        self.reverse = reverse
    }

    /// Elements in one window: the decay product (affine only), then the state.
    private var windowCount: Int { (op == .affine ? decayCount : 0) + count }

    /// Scratch bytes: the window, the exclusive part's decay, and a received window.
    public var scratchBytes: Int { (2 * windowCount + decayCount) * dataType.size }

    public func run<Links: CollectiveLinks>(links: Links, state: UnsafeRawPointer, decay: UnsafeRawPointer?,
                                            exclusive: UnsafeMutableRawPointer, inclusive: UnsafeMutableRawPointer,
                                            scratch: UnsafeMutableRawPointer) throws {
        let n = links.worldSize, r = links.rank
        let q = reverse ? n - 1 - r : r
        func rank(atPosition p: Int) -> Int { reverse ? n - 1 - p : p }
        let size = dataType.size, affine = op == .affine
        let decays = affine ? decayCount : 0
        let stride = affine ? count / decayCount : 1
        // Layout: window = [decay product | state] in scratch; received window after it; then E's decay.
        let window = scratch, received = scratch + windowCount * size, exclusiveDecay = received + windowCount * size
        let windowState = window + decays * size, receivedState = received + decays * size
        if affine { window.copyMemory(from: decay!, byteCount: decays * size) }
        windowState.copyMemory(from: state, byteCount: count * size)
        op.fillIdentity(exclusive, count: count, dataType: dataType)
        if affine { fillOnes(exclusiveDecay, count: decays) }

        var distance = 1, tag: UInt32 = 0
        while distance < n {
            var send: Links.Request?
            if q + distance < n {
                send = try links.send(UnsafeRawBufferPointer(start: window, count: windowCount * size),
                                      to: rank(atPosition: q + distance), tag: tag)
            }
            if q - distance >= 0 {
                let receive = try links.receive(into: UnsafeMutableRawBufferPointer(start: received, count: windowCount * size),
                                                from: rank(atPosition: q - distance), tag: tag)
                try links.wait(receive)
                if let send { try links.wait(send) } // the window is about to change
                send = nil
                if affine {
                    // E = W' then E: state first (it needs E's old decay), then the decay product.
                    affineStep(out: exclusive, decay: exclusiveDecay, x: receivedState, s: exclusive, stride: stride)
                    multiply(exclusiveDecay, exclusiveDecay, received, count: decays)
                    affineStep(out: windowState, decay: window, x: receivedState, s: windowState, stride: stride)
                    multiply(window, window, received, count: decays)
                } else {
                    let reduceOp = op.reduceOp!
                    Reduction.combine(reduceOp, dataType, out: exclusive, receivedState, exclusive, count: count)
                    Reduction.combine(reduceOp, dataType, out: windowState, receivedState, windowState, count: count)
                }
            }
            if let send { try links.wait(send) }
            distance *= 2
            tag &+= 1
        }
        inclusive.copyMemory(from: windowState, byteCount: count * size)
    }

    /// out = g[i / stride] * x + s (the affine combine's state part).
    private func affineStep(out: UnsafeMutableRawPointer, decay: UnsafeRawPointer, x: UnsafeRawPointer,
                            s: UnsafeRawPointer, stride: Int) {
        guard count > 0 else { return }
        precondition(chorus_affine_step(dataType.kernelValue, out, decay, x, s, count, stride) == 0)
    }

    /// out = a * b element-wise (decay products).
    private func multiply(_ out: UnsafeMutableRawPointer, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, count: Int) {
        Reduction.combine(.prod, dataType, out: out, a, b, count: count)
    }

    private func fillOnes(_ buffer: UnsafeMutableRawPointer, count: Int) {
        ScanOperator.prod.fillIdentity(buffer, count: count, dataType: dataType)
    }
}
