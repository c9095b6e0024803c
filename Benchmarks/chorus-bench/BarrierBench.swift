import Chorus

/// A barrier moves no data: its row shows the latency of one verdict round trip.
enum BarrierBench: BenchCase {
    static func counts(bytes: Int, elementSize: Int, world: Int) -> (input: Int, output: Int) { (0, 0) }
    static func busFactor(world n: Int) -> Double { 0 }
    static func input(_ b: BenchBuffers, index: Int) -> Double { 0 }
    static func expected(_ b: BenchBuffers, index: Int) -> Double { 0 }
    static func run(_ c: Communicator, _ b: BenchBuffers) throws { try c.barrier() }
}
