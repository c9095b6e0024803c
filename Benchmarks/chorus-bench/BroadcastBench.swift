import Chorus

/// Broadcast from rank 0, in place: the other ranks' buffers start as their own pattern and must
/// end as rank 0's.
enum BroadcastBench: BenchCase {
    static func counts(bytes: Int, elementSize: Int, world: Int) -> (input: Int, output: Int) {
        (bytes / elementSize, bytes / elementSize)
    }
    /// Every link carries the buffer once.
    static func busFactor(world n: Int) -> Double { 1 }
    static func input(_ b: BenchBuffers, index: Int) -> Double { b.pattern(rank: b.rank, index: index) }
    static func expected(_ b: BenchBuffers, index: Int) -> Double { b.pattern(rank: 0, index: index) }
    static func run(_ c: Communicator, _ b: BenchBuffers) throws {
        b.output.copyMemory(from: b.input, byteCount: b.inputCount * b.elementSize)
        try c.broadcast(b.outputBuffer, root: 0)
    }
}
