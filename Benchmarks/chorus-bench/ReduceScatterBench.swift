import Chorus

enum ReduceScatterBench: BenchCase {
    static func counts(bytes: Int, elementSize: Int, world: Int) -> (input: Int, output: Int) {
        let block = bytes / elementSize / world
        return (block * world, block)
    }
    /// Each rank sends and receives (n-1)/n of the whole input.
    static func busFactor(world n: Int) -> Double { n > 1 ? Double(n - 1) / Double(n) : 1 }
    static func input(_ b: BenchBuffers, index: Int) -> Double { b.pattern(rank: b.rank, index: index) }
    static func expected(_ b: BenchBuffers, index: Int) -> Double {
        b.dataType.expected(index: b.rank * b.outputCount + index, worldSize: b.world, op: b.op)
    }
    static func run(_ c: Communicator, _ b: BenchBuffers) throws {
        try c.reduceScatter(send: b.inputBuffer, receive: b.outputBuffer, count: b.outputCount,
                            dataType: b.dataType.dataType, op: b.op)
    }
}
