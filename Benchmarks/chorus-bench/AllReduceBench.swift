import Chorus

enum AllReduceBench: BenchCase {
    static func counts(bytes: Int, elementSize: Int, world: Int) -> (input: Int, output: Int) {
        (bytes / elementSize, bytes / elementSize)
    }
    /// Each rank sends and receives 2(n-1)/n of the buffer (reduce-scatter, then all-gather).
    static func busFactor(world n: Int) -> Double { n > 1 ? 2 * Double(n - 1) / Double(n) : 1 }
    static func input(_ b: BenchBuffers, index: Int) -> Double { b.pattern(rank: b.rank, index: index) }
    static func expected(_ b: BenchBuffers, index: Int) -> Double {
        b.dataType.expected(index: index, worldSize: b.world, op: b.op)
    }
    static func run(_ c: Communicator, _ b: BenchBuffers) throws {
        if let quantization = b.quantization {
            try c.allReduce(send: b.inputBuffer, receive: b.outputBuffer, count: b.inputCount, dataType: b.dataType.dataType,
                            op: b.op, quantization: quantization)
            return
        }
        try c.allReduce(send: b.inputBuffer, receive: b.outputBuffer, count: b.inputCount,
                        dataType: b.dataType.dataType, op: b.op, algorithm: b.algorithm)
    }

    /// Starts one all-reduce of a burst in flight (`--in-flight`).
    static func start(_ c: Communicator, _ b: BenchBuffers) throws -> PendingCollective {
        try c.startAllReduce(send: b.inputBuffer, receive: b.outputBuffer, count: b.inputCount,
                             dataType: b.dataType.dataType, op: b.op, algorithm: b.algorithm)
    }
}
