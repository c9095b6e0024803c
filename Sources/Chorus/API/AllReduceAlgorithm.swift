/// How an all-reduce moves its data. Results are bit-identical across peers for a given algorithm
/// (the two fold in different orders, so floats may differ between algorithms).
public enum AllReduceAlgorithm: String, Sendable, CaseIterable {
    /// Recursive doubling up to `Configuration.recursiveDoublingMaxBytes`, the ring above. Two peers
    /// too: their one exchange of the whole buffer beats the ring's two dependent half-size steps up
    /// to 256 KiB (DESIGN.md, "Algorithms").
    case auto
    /// Reduce-scatter then all-gather around the ring: 2(n-1) steps, bandwidth-optimal.
    case ring
    /// log2(n) exchanges of the whole buffer over the mesh: latency-optimal for small messages.
    case recursiveDoubling

    func resolved(bytes: Int, worldSize: Int, configuration: Configuration) -> AllReduceAlgorithm {
        guard self == .auto else { return self }
        return worldSize > 1 && bytes <= configuration.recursiveDoublingMaxBytes ? .recursiveDoubling : .ring
    }

    var wireValue: UInt64 {
        switch self {
        case .auto: 0
        case .ring: 1
        case .recursiveDoubling: 2
        }
    }
}

/// How an All-Scan moves its data.
public enum ScanAlgorithm: String, Sendable, CaseIterable {
    /// Recursive doubling for three or more peers up to `Configuration.scanRecursiveDoublingMaxBytes`,
    /// the chain otherwise.
    case auto
    /// The pipelined chain: every rank sends one state; the sequential fold, bit-identical for every K.
    case chain
    /// ceil(log2 n) rounds of whole windows: fewer hops for small states (rounds differently).
    case recursiveDoubling

    func resolved(bytes: Int, worldSize: Int, configuration: Configuration) -> ScanAlgorithm {
        guard self == .auto else { return self }
        return worldSize > 2 && bytes <= configuration.scanRecursiveDoublingMaxBytes ? .recursiveDoubling : .chain
    }
}
