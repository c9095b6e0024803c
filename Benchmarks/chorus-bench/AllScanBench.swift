import Chorus

/// All-Scan with the sum operator (chain or recursive doubling): rank p's inclusive result is the sum over ranks 0..p of
/// the pattern. Time is the whole chain's; the bus-bandwidth factor is 1 (each rank sends one state).
enum AllScanBench: BenchCase {
    static func counts(bytes: Int, elementSize: Int, world: Int) -> (input: Int, output: Int) {
        (bytes / elementSize, bytes / elementSize)
    }
    static func busFactor(world n: Int) -> Double { 1 }
    static func input(_ b: BenchBuffers, index: Int) -> Double { b.pattern(rank: b.rank, index: index) }
    static func expected(_ b: BenchBuffers, index: Int) -> Double {
        b.dataType.expected(index: index, worldSize: b.rank + 1, op: b.op)
    }
    static func run(_ c: Communicator, _ b: BenchBuffers) throws {
        try c.allScan(state: b.inputBuffer, count: b.inputCount, dataType: b.dataType.dataType, op: b.scanOperator,
                      exclusive: nil, inclusive: b.outputBuffer, blocks: b.blocks, algorithm: b.scanAlgorithm)
    }
}
