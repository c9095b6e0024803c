import ArgumentParser
import Chorus
import ChorusLauncher
#if canImport(Glibc)
import Glibc
#endif

@main
struct ChorusBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chorus-bench",
        abstract: "Bandwidth and latency of Chorus collectives, nccl-tests style.",
        discussion: "COLLECTIVE is one of: \(BenchCollective.allCases.map(\.rawValue).joined(separator: ", ")).")

    @Argument(help: "The collective to measure.") var collective: BenchCollective

    @Option(help: "Start an embedded master and this many local peer processes.") var local: Int?
    @Option(help: "With --local: core binds each peer process to a CPU of its own when they fit in this process's CPUs (as mpirun does by default), none leaves them to the scheduler.") var bindTo = Binding.core
    @Option(help: "Join the master at HOST:PORT (default: CHORUS_MASTER).") var master: String?
    @Option(name: .customShort("b"), help: "Smallest message (K/M/G suffixes).") var minBytes = "4K"
    @Option(name: .customShort("e"), help: "Largest message.") var maxBytes = "64M"
    @Option(name: .customShort("f"), help: "Size multiplication factor.") var factor = 2
    @Option(name: .customShort("n"), help: "Timed iterations per size.") var iterations = 20
    @Option(name: .customShort("w"), help: "Warm-up iterations per size.") var warmup = 5
    @Option(help: "Element type: f32 f64 f16 bf16 i32 i64 u8.") var dtype = "f32"
    @Option(help: "Reduction: sum prod min max avg.") var redop = "sum"
    @Option(help: "Algorithm: allreduce ring, tree (recursive doubling) or auto; allscan chain, tree or auto.") var algorithm = "auto"
    @Option(help: "Transport: tcp, shm, rdma or auto (rdma needs an RDMA device and --bind on its interface).") var transport = "tcp"
    @Option(help: "Address peers listen on (default: CHORUS_BIND, else 127.0.0.1).") var bind: String?
    @Option(help: "Connections each peer dials to its right neighbour; 0: automatic (one, or what --optimize-topology measured the link to need).") var connections = 0
    @Flag(help: "Reduce in place (default: out of place).") var inPlace = false
    @Option(help: "allscan: blocks pipelined down the chain (default: from the cost model).") var blocks: Int?
    @Option(help: "syncstate: how many peers are outdated (the last ranks); the others serve.") var joiners = 1
    @Flag(help: "Verify every result bitwise against the exact expected value.") var check = false
    @Flag(help: "Register the buffers for zero-copy RDMA sends (Communicator.registerMemory).") var register = false
    @Option(help: "Append one JSON object per row to FILE.") var json: String?
    @Option(help: "World size to wait for when joining a master (default: --local, else 1).") var world: Int?
    @Option(help: "Before each timed call: a barrier, then this many milliseconds idle (the compute between training steps); default: back to back.") var gapMs: Int?
    @Option(help: "allreduce: send the data quantized, int8 or int4 (f32/f16/bf16, sum/avg); with --check, count results outside the documented error bound and print the error.") var quantize: String?
    @Option(help: "With --quantize: elements per scale.") var quantizeBlock = 64
    @Option(help: "With --quantize: absmax or minmax scaling.") var quantizeScaling = "absmax"
    @Option(help: "allreduce: each timed call starts this many all-reduces in flight together (each on its own buffers) and waits for them; rows report the time per all-reduce.") var inFlight = 1
    @Flag(help: "Before the sweep: order the ring by measured link speed (Communicator.optimizeTopology) and print what it measured and chose.") var optimizeTopology = false
    @Flag(help: .hidden) var injectWrongResult = false
    @Flag(help: .hidden) var localPeer = false

    func validate() throws {
        guard BenchDataType(rawValue: dtype) != nil else { throw ValidationError("unknown --dtype \(dtype)") }
        guard ReduceOp.allCases.contains(where: { $0.description == redop }) else { throw ValidationError("unknown --redop \(redop)") }
        guard Self.algorithms[algorithm] != nil || (collective == .allscan && algorithm == "chain") else {
            throw ValidationError("--algorithm \(algorithm) is not available; have: ring, tree, auto (allscan: chain, tree, auto)")
        }
        guard !inPlace || collective == .allreduce else { throw ValidationError("--in-place applies to allreduce only") }
        guard collective != .allscan || redop != "avg" else { throw ValidationError("allscan has no avg operator") }
        if let blocks, blocks < 1 { throw ValidationError("--blocks must be at least 1") }
        guard joiners >= 0, joiners < max(2, local ?? world ?? 2) else { throw ValidationError("--joiners must leave at least one peer to serve") }
        guard let kind = TransportKind(rawValue: transport) else { throw ValidationError("--transport must be tcp, shm, rdma or auto") }
        if kind == .rdma, let why = TransportKind.rdmaUnavailableReason { throw ValidationError("--transport rdma: \(why)") }
        guard (0 ... 64).contains(connections) else { throw ValidationError("--connections must be in 0...64") }
        if let gapMs, gapMs < 0 { throw ValidationError("--gap-ms must not be negative") }
        guard (1 ... 64).contains(inFlight) else { throw ValidationError("--in-flight must be 1...64 (the master's window)") }
        if inFlight > 1 {
            guard collective == .allreduce, quantize == nil else { throw ValidationError("--in-flight applies to the plain allreduce only") }
        }
        guard factor >= 2, iterations >= 1, warmup >= 0 else { throw ValidationError("need -f >= 2, -n >= 1, -w >= 0") }
        guard try parseSize(minBytes) <= parseSize(maxBytes) else { throw ValidationError("-b \(minBytes) is larger than -e \(maxBytes)") }
        if let local, local < 1 { throw ValidationError("--local needs at least 1 peer") }
        if quantize != nil {
            guard collective == .allreduce else { throw ValidationError("--quantize applies to allreduce only") }
            let format = try quantization()!
            if let problem = format.problem { throw ValidationError("--quantize-block: \(problem)") }
        }
    }

    /// The quantization --quantize asks for, or nil.
    private func quantization() throws -> Quantization? {
        guard let quantize else { return nil }
        let bits: [String: Quantization.Bits] = ["int8": .int8, "int4": .int4]
        let scalings: [String: Quantization.Scaling] = ["absmax": .absmax, "minmax": .minMax]
        guard let chosen = bits[quantize] else { throw ValidationError("--quantize must be int8 or int4") }
        guard let scaling = scalings[quantizeScaling] else { throw ValidationError("--quantize-scaling must be absmax or minmax") }
        return Quantization(chosen, scaling: scaling, blockSize: quantizeBlock)
    }

    func run() throws {
        if let local, !localPeer {
            try launchLocal(peers: local)
            return
        }
        var configuration = try Configuration.fromEnvironment()
        configuration.connectionsPerPeer = connections
        configuration.operationsInFlight = max(configuration.operationsInFlight, inFlight)
        configuration.transport = TransportKind(rawValue: transport)!
        if let bind { configuration.bindHost = bind }
        let communicator = try Communicator(master: master, configuration: configuration)
        let wanted = world ?? local ?? 1
        while communicator.worldSize < wanted { try communicator.updateTopology(minimumWorldSize: wanted) }
        if optimizeTopology { try reportTopologyOptimization(communicator) }
        let sweep = Sweep(collective: collective, dataType: BenchDataType(rawValue: dtype)!,
                          op: ReduceOp.allCases.first { $0.description == redop }!,
                          sizes: try sizes(), iterations: iterations, warmup: warmup,
                          inPlace: inPlace || collective == .syncstate, blocks: blocks, syncReceivers: joiners, registerBuffers: register,
                          check: check, algorithm: Self.algorithms[algorithm] ?? .auto, quantization: try quantization(),
                          scanAlgorithm: Self.scanAlgorithms[algorithm]!, algorithmName: algorithm,
                          transport: communicator.transport.rawValue,
                          connections: connections, gap: gapMs.map { .milliseconds($0) }, inFlight: inFlight,
                          injectWrongResult: injectWrongResult, jsonPath: json)
        let wrong = try sweep.run(on: communicator)
        try communicator.leave()
        if wrong > 0 { throw ExitCode(2) }
    }

    /// Orders the ring by link speed; rank 0 prints the time it took and the ring (as comment lines).
    private func reportTopologyOptimization(_ communicator: Communicator) throws {
        let before = communicator.members, started = ContinuousClock.now
        let result = try communicator.optimizeTopology()
        guard communicator.rank == 0 else { return }
        let seconds = (ContinuousClock.now - started) / .seconds(1)
        func megabits(_ bytesPerSecond: Double) -> String { String(Int(bytesPerSecond * 8 / 1e6)) }
        print("# optimizeTopology: \((seconds * 1000).rounded() / 1000) s, \(result.measuredPairs) pairs measured here; ring (peer ids) "
              + "\(before) -> \(result.ring); slowest link \(megabits(result.slowestLinkBefore)) -> \(megabits(result.slowestLinkAfter)) Mbit/s; "
              + "\(result.rightLanes) connection(s) to the right neighbour")
    }

    static let algorithms: [String: AllReduceAlgorithm] = ["auto": .auto, "ring": .ring, "tree": .recursiveDoubling, "rd": .recursiveDoubling]
    static let scanAlgorithms: [String: ScanAlgorithm] = ["auto": .auto, "chain": .chain, "ring": .chain, "tree": .recursiveDoubling,
                                                          "rd": .recursiveDoubling]

    /// The message sizes: -b, then times -f while within -e (a sweep that starts at 0 is just 0).
    private func sizes() throws -> [Int] {
        let low = try parseSize(minBytes), high = try parseSize(maxBytes)
        return Array(sequence(first: low) { $0 > 0 && $0 * factor <= high ? $0 * factor : nil })
    }

    /// Starts a master in this process and `peers` copies of this program that join it.
    private func launchLocal(peers: Int) throws {
        guard peers >= 1 else { throw ValidationError("--local needs at least 1 peer") }
        let master = try Master(host: "127.0.0.1", port: 0, configuration: try Configuration.fromEnvironment())
        var arguments = Array(CommandLine.arguments.dropFirst())
        arguments += ["--local-peer", "--master", master.endpoint]
        let group = LocalGroup()
        let cpus = bindTo == .core ? CoreBinding.plan(peers: peers) : nil
        print("# peer processes " + (cpus.map { "bound to CPUs \($0.map(String.init).joined(separator: ", "))" } ?? "unbound"))
        fflush(nil) // before the peers' lines
        for index in 0 ..< peers {
            try group.start("peer process \(index)", executable: ChildProcess.currentExecutable(), arguments: arguments,
                            cpu: cpus?[index])
        }
        defer { master.shutdown() }
        do {
            try group.waitAll(timeoutMilliseconds: 3_600_000)
        } catch let failure as LocalGroup.Failure {
            // Keep the failed peer's status for scripts (2: it found wrong results); 124: the deadline.
            writeToStandardError("chorus-bench: \(failure)\n")
            throw ExitCode(failure.exitCode ?? 124)
        }
    }
}

extension BenchCollective: ExpressibleByArgument {}

/// Where `--local` puts its peer processes (`--bind-to`).
enum Binding: String, CaseIterable, ExpressibleByArgument {
    case core, none
}

/// "4K", "64M", "1G" (powers of two) or a plain byte count.
func parseSize(_ text: String) throws -> Int {
    let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
    if let last = text.uppercased().last, let unit = units[last], let value = Int(text.dropLast()) { return value * unit }
    guard let value = Int(text), value >= 0 else { throw ValidationError("bad size '\(text)'") }
    return value
}
