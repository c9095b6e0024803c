import Chorus
#if canImport(Glibc)
import Glibc
#endif

/// One sweep over message sizes: time every iteration, take the slowest rank's time per iteration
/// (an all-reduce of the timings), and report what nccl-tests reports.
struct Sweep {
    let collective: BenchCollective
    let dataType: BenchDataType
    let op: ReduceOp
    let sizes: [Int]
    let iterations: Int
    let warmup: Int
    let inPlace: Bool
    let blocks: Int?
    let syncReceivers: Int
    /// Register the buffers for zero-copy RDMA sends.
    let registerBuffers: Bool
    let check: Bool
    let algorithm: AllReduceAlgorithm
    /// allreduce: send quantized (the check then measures the error against the exact result).
    let quantization: Quantization?
    let scanAlgorithm: ScanAlgorithm
    let algorithmName: String
    let transport: String
    let connections: Int
    /// nil: back to back. Otherwise each timed call follows a barrier and this much idle.
    let gap: Duration?
    /// allreduce: each timed call is this many all-reduces in flight together (`startAllReduce`,
    /// each on its own buffers), and the row reports the burst's time per all-reduce.
    let inFlight: Int
    let injectWrongResult: Bool
    let jsonPath: String?

    /// Runs the sweep; rank 0 prints. Returns the number of wrong elements seen by this rank.
    func run(on communicator: Communicator) throws -> Int {
        let rank = communicator.rank, world = communicator.worldSize
        let leader = rank == 0
        let progress = leader && isatty(2) == 1
        func pace() throws {
            if let gap {
                try communicator.barrier()
                if gap > .zero { sleepFor(gap) }
            }
        }
        let timingCPU = try cpuCostOfTiming(samples: iterations, pace: pace)
        if leader {
            let pacing = gap.map { "after a barrier and \($0) idle" } ?? "back to back"
            let bursts = inFlight > 1 ? ", \(inFlight) in flight (times per all-reduce of each burst)" : ""
            print("# chorus-bench \(collective.rawValue): \(world) peers, transport \(transport) \(connections == 0 ? "automatic lanes" : "x\(connections)"), algorithm \(quantization.map { "quantized (\($0))" } ?? algorithmName), \(inPlace ? "in place" : "out of place"), \(pacing)\(bursts)")
            print("# cpu(us): the call's CPU less \(fixed(timingCPU * 1e6, 2)) us, what timing an empty call costs on rank 0")
            print(Row.header)
        }
        var totalWrong = 0
        let kind = collective.benchCase
        let elementSize = dataType.dataType.size
        for bytes in collective == .barrier ? [0] : sizes {
            let (inputCount, outputCount) = kind.counts(bytes: bytes, elementSize: elementSize, world: world)
            var slots: [BenchBuffers] = []
            var registrations: [MemoryRegistration] = []
            defer {
                registrations.forEach { $0.unregister() }
                for slot in slots {
                    slot.input.deallocate()
                    if !inPlace { slot.output.deallocate() }
                }
            }
            for _ in 0 ..< inFlight {
                let input = UnsafeMutableRawPointer.allocate(byteCount: max(1, inputCount * elementSize), alignment: 64)
                let output = inPlace ? input : UnsafeMutableRawPointer.allocate(byteCount: max(1, outputCount * elementSize), alignment: 64)
                slots.append(BenchBuffers(rank: rank, world: world, dataType: dataType, op: op, algorithm: algorithm,
                                          quantization: quantization, scanAlgorithm: scanAlgorithm,
                                          inPlace: inPlace, blocks: blocks, syncReceivers: syncReceivers, inputCount: inputCount,
                                          outputCount: outputCount, input: input, output: output))
                if registerBuffers {
                    registrations.append(try communicator.registerMemory(UnsafeRawBufferPointer(start: input, count: max(1, inputCount * elementSize))))
                    if !inPlace {
                        registrations.append(try communicator.registerMemory(UnsafeRawBufferPointer(start: output, count: max(1, outputCount * elementSize))))
                    }
                }
            }
            let buffers = slots[0]
            func fill() {
                for slot in slots {
                    for i in 0 ..< inputCount { dataType.store(kind.input(slot, index: i), at: i, in: slot.input) }
                }
            }
            fill()
            var times: [Double] = [], cpuTimes: [Double] = []
            var wrong = 0
            var error = QuantizationError()
            for iteration in 0 ..< warmup + iterations {
                if progress { writeToStandardError("\r  \(bytes) bytes: iteration \(iteration + 1)/\(warmup + iterations)   ") }
                try pace()
                let cpuStarted = processCPUSeconds()
                let started = ContinuousClock.now
                if inFlight > 1 {
                    let pending = try slots.map { try AllReduceBench.start(communicator, $0) }
                    for operation in pending { try operation.wait() }
                } else {
                    try kind.run(communicator, buffers)
                }
                let elapsed = ContinuousClock.now - started
                if iteration >= warmup {
                    times.append(seconds(elapsed) / Double(inFlight))
                    cpuTimes.append((processCPUSeconds() - cpuStarted - timingCPU) / Double(inFlight))
                }
                if check {
                    if injectWrongResult && leader && outputCount > 0 { dataType.store(99, at: 0, in: buffers.output) }
                    if let quantization {
                        error = QuantizationError(buffers, quantization)
                        wrong += error.outsideBound
                    } else {
                        wrong += slots.reduce(0) { $0 + countWrong(kind, $1) }
                    }
                    // Checking takes rank-dependent time; realign so it does not leak into the next timing.
                    try communicator.barrier()
                }
                if kind.overwritesInput(buffers) { fill() }
                if kind.refillIsRankDependent { try communicator.barrier() }
            }
            if progress { writeToStandardError("\r\u{1B}[K") }
            // The collective's time per iteration is its slowest rank's; wrong counts add up.
            let slowest = try communicator.allReduce(times, op: .max, algorithm: .ring)
            // CPU seconds of the call (all threads of this process, less what timing costs), the busiest rank's.
            let busiest = try communicator.allReduce(cpuTimes, op: .max, algorithm: .ring)
            let wrongEverywhere = try communicator.allReduce([Int64(wrong)], op: .sum)[0]
            totalWrong += wrong
            if leader {
                let row = Row(collective: collective.rawValue, algorithm: quantization.map { "\($0.bits)" } ?? algorithmName, transport: transport,
                              connections: connections, peers: world, dtype: dataType.rawValue, op: op.description,
                              bytes: max(inputCount, outputCount) * elementSize, count: max(inputCount, outputCount),
                              inPlace: inPlace, times: slowest.sorted(), cpuTimes: busiest.sorted(), timingCPU: timingCPU, wrong: check ? Int(wrongEverywhere) : -1,
                              busFactor: kind.busFactor(world: world))
                print(row.text)
                if check, quantization != nil { print("# \(bytes) B: \(error)") }
                if let jsonPath { try row.appendJSON(to: jsonPath) }
            }
        }
        return totalWrong
    }

    private func countWrong(_ kind: any BenchCase.Type, _ b: BenchBuffers) -> Int {
        var expected = [UInt8](repeating: 0, count: 8)
        var wrong = 0
        let size = b.elementSize
        for i in 0 ..< b.outputCount {
            expected.withUnsafeMutableBytes { dataType.store(kind.expected(b, index: i), at: 0, in: $0.baseAddress!) }
            if memcmp(expected, b.output + i * size, size) != 0 { wrong += 1 }
        }
        return wrong
    }
}

private func sleepFor(_ d: Duration) {
    var remaining = timespec(tv_sec: Int(d.components.seconds), tv_nsec: Int(d.components.attoseconds / 1_000_000_000))
    while true {
        var request = remaining
        guard nanosleep(&request, &remaining) != 0, errno == EINTR else { return }
    }
}

private func seconds(_ d: Duration) -> Double {
    Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
}

/// One result line, in the table and in JSON.
struct Row {
    let collective: String, algorithm: String, transport: String
    let connections: Int
    let peers: Int
    let dtype: String, op: String
    let bytes: Int, count: Int
    let inPlace: Bool
    let times: [Double] // sorted, seconds
    let cpuTimes: [Double] // sorted, CPU seconds of the busiest rank, less timingCPU
    let timingCPU: Double  // seconds, what timing an empty call costs on rank 0 (cpuCostOfTiming)
    let wrong: Int       // -1 when not checked
    let busFactor: Double

    static let header = pad(["size(B)", "count", "type", "redop", "time(us)", "min(us)", "p99(us)", "cpu(us)", "algbw(GB/s)", "busbw(GB/s)", "#wrong"])

    var median: Double { times[times.count / 2] }
    var cpuMedian: Double { cpuTimes[cpuTimes.count / 2] }
    var p99: Double { times[min(times.count - 1, Int((Double(times.count) * 0.99).rounded(.up)) - 1)] }
    var algbw: Double { median > 0 ? Double(bytes) / median / 1e9 : 0 }
    /// nccl-tests' bus bandwidth: algbw times the collective's factor (docs/benchmarks.md).
    var busbw: Double { algbw * busFactor }

    var text: String {
        Self.pad(["\(bytes)", "\(count)", dtype, op, fixed(median * 1e6, 1), fixed(times[0] * 1e6, 1), fixed(p99 * 1e6, 1), fixed(cpuMedian * 1e6, 1),
                  fixed(algbw, 3), fixed(busbw, 3), wrong < 0 ? "N/A" : "\(wrong)"])
    }

    func appendJSON(to path: String) throws {
        let fields = [
            "\"collective\":\"\(collective)\"", "\"algorithm\":\"\(algorithm)\"", "\"transport\":\"\(transport)\"", "\"connections\":\(connections)",
            "\"library\":\"chorus\"", "\"peers\":\(peers)", "\"dtype\":\"\(dtype)\"", "\"op\":\"\(op)\"",
            "\"bytes\":\(bytes)", "\"count\":\(count)", "\"in_place\":\(inPlace)",
            "\"time_us_median\":\(fixed(median * 1e6, 2))", "\"time_us_min\":\(fixed(times[0] * 1e6, 2))",
            "\"time_us_p99\":\(fixed(p99 * 1e6, 2))", "\"cpu_us_median\":\(fixed(cpuMedian * 1e6, 2))", "\"cpu_us_timing\":\(fixed(timingCPU * 1e6, 2))", "\"algbw_GBps\":\(fixed(algbw, 4))",
            "\"busbw_GBps\":\(fixed(busbw, 4))", "\"wrong\":\(max(wrong, 0))", "\"checked\":\(wrong >= 0)",
        ]
        let line = "{" + fields.joined(separator: ",") + "}\n"
        guard let file = fopen(path, "a") else { throw BenchError("cannot open \(path) for appending") }
        defer { fclose(file) }
        fputs(line, file)
    }

    private static func pad(_ columns: [String]) -> String {
        columns.map { String(repeating: " ", count: max(0, 12 - $0.count)) + $0 }.joined()
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A decimal with `digits` digits after the point (no Foundation).
func fixed(_ value: Double, _ digits: Int) -> String {
    var scale = 1.0
    for _ in 0 ..< digits { scale *= 10 }
    let scaled = (value * scale).rounded()
    guard scaled.isFinite, abs(scaled) < 9e15 else { return "\(value)" }
    let whole = Int(scaled)
    let sign = whole < 0 ? "-" : ""
    let magnitude = abs(whole)
    let integer = magnitude / Int(scale), fraction = magnitude % Int(scale)
    guard digits > 0 else { return "\(sign)\(integer)" }
    let fractionText = String(fraction)
    return "\(sign)\(integer)." + String(repeating: "0", count: digits - fractionText.count) + fractionText
}

/// Writes to standard error, unbuffered (progress lines, launcher failures).
func writeToStandardError(_ text: String) {
    var bytes = Array(text.utf8)
    _ = write(2, &bytes, bytes.count)
}
