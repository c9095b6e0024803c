import Chorus

enum AllGatherBench: BenchCase {
    static func counts(bytes: Int, elementSize: Int, world: Int) -> (input: Int, output: Int) {
        let block = bytes / elementSize / world
        return (block, block * world)
    }
    /// Each rank receives the (n-1)/n of the output it did not hold.
    static func busFactor(world n: Int) -> Double { n > 1 ? Double(n - 1) / Double(n) : 1 }
    static func input(_ b: BenchBuffers, index: Int) -> Double { b.pattern(rank: b.rank, index: index) }
    static func expected(_ b: BenchBuffers, index: Int) -> Double {
        b.inputCount == 0 ? 0 : b.pattern(rank: index / b.inputCount, index: index % b.inputCount)
    }
    static func run(_ c: Communicator, _ b: BenchBuffers) throws {
        try c.allGather(send: b.inputBuffer, receive: b.outputBuffer, count: b.inputCount, dataType: b.dataType.dataType)
    }
}
