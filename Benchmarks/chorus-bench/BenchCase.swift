import Chorus

/// The buffers and parameters of one message size, shared by every collective's bench case.
struct BenchBuffers {
    let rank: Int, world: Int
    let dataType: BenchDataType
    let op: ReduceOp
    let algorithm: AllReduceAlgorithm
    let quantization: Quantization?
    let scanAlgorithm: ScanAlgorithm
    let inPlace: Bool
    let blocks: Int?
    /// syncstate: how many of the last ranks are outdated.
    let syncReceivers: Int
    let inputCount: Int, outputCount: Int
    let input: UnsafeMutableRawPointer
    let output: UnsafeMutableRawPointer

    var elementSize: Int { dataType.dataType.size }
    var inputBuffer: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: input, count: inputCount * elementSize) }
    var outputBuffer: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: output, count: outputCount * elementSize) }
    /// The scan operator matching `op` (avg has none; the harness refuses it for allscan).
    var scanOperator: ScanOperator {
        switch op {
        case .prod: .prod
        case .min: .min
        case .max: .max
        default: .sum
        }
    }
    /// The exact test pattern (see BenchDataType) of `rank` at element `index`.
    func pattern(rank: Int, index: Int) -> Double { Double(BenchDataType.input(rank: rank, index: index, op: op)) }
}

/// One collective's part of the harness (one small file each): its size convention, bus-bandwidth
/// factor, call, and exact expected output. Sizes follow nccl-tests: all-reduce and broadcast count
/// the buffer, reduce-scatter its whole input, all-gather its whole output.
protocol BenchCase {
    /// Elements each rank sends and receives for a message of `bytes`.
    static func counts(bytes: Int, elementSize: Int, world: Int) -> (input: Int, output: Int)
    /// busbw = algbw x this factor (docs/benchmarks.md derives them).
    static func busFactor(world: Int) -> Double
    /// The input of this rank at `index`.
    static func input(_ b: BenchBuffers, index: Int) -> Double
    /// The exact output at `index`.
    static func expected(_ b: BenchBuffers, index: Int) -> Double
    /// Runs the collective once.
    static func run(_ c: Communicator, _ b: BenchBuffers) throws
    /// True when every call overwrites the input (so it is refilled between iterations, untimed).
    static func overwritesInput(_ b: BenchBuffers) -> Bool
    /// True when only some ranks refill: the ranks then realign (untimed) so the refill's skew does
    /// not count as the next iteration's time.
    static var refillIsRankDependent: Bool { get }
}

extension BenchCase {
    static func overwritesInput(_ b: BenchBuffers) -> Bool { b.inPlace }
    static var refillIsRankDependent: Bool { false }
}

enum BenchCollective: String, CaseIterable {
    case allreduce, reducescatter, allgather, broadcast, barrier, allscan, syncstate

    var benchCase: any BenchCase.Type {
        switch self {
        case .allreduce: AllReduceBench.self
        case .reducescatter: ReduceScatterBench.self
        case .allgather: AllGatherBench.self
        case .broadcast: BroadcastBench.self
        case .barrier: BarrierBench.self
        case .allscan: AllScanBench.self
        case .syncstate: SyncStateBench.self
        }
    }
}
