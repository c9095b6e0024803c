/// A small seeded generator (SplitMix64) for the tools and examples, so a stress schedule or a
/// generated data set replays exactly from its seed.
public struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    public mutating func next(below bound: UInt64) -> UInt64 { next() % bound }

    /// Uniform in [-1, 1).
    public mutating func symmetric() -> Float { Float(next() >> 40) / Float(1 << 23) - 1 }
}
