import ArgumentParser
import Chorus
import ChorusLauncher
import Foundation

/// How Chorus grows with the group: for each world size, an embedded master and that many
/// communicators as threads of a few processes, all with the default configuration. Reports the
/// time to form an epoch (a safe point with nobody joining: the topology goes out and every member
/// connects its links; the slowest member's time), the connections each peer holds, the time of one
/// collective, and the master's CPU per formation and per collective.
@main
struct ChorusScale: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chorus-scale",
        abstract: "Epoch formation time, links per peer and master CPU for growing groups (threads in a few processes).")

    @Option(help: "World sizes, comma-separated.") var peers = "8,32,128,256"
    @Option(help: "Processes the communicators are spread over.") var processes = 4
    @Option(help: "Formations timed per world size.") var rounds = 5
    @Option(help: "Collectives timed per world size.") var operations = 100
    @Option(help: "Bytes of each all-reduce (f32 sum, algorithm auto).") var bytes = 4096

    @Option(help: .hidden) var master: String?
    @Option(help: .hidden) var world: Int?
    @Option(help: .hidden) var threads: Int?

    func validate() throws {
        guard worldSizes.allSatisfy({ $0 >= 2 }), !worldSizes.isEmpty else { throw ValidationError("--peers takes world sizes of at least 2, e.g. 8,32") }
        guard processes >= 1, rounds >= 1, operations >= 1, bytes >= 4, bytes % 4 == 0 else {
            throw ValidationError("need --processes, --rounds, --operations >= 1 and --bytes a positive multiple of 4")
        }
    }

    var worldSizes: [Int] { peers.split(separator: ",").compactMap { Int($0) } }

    func run() throws {
        if let master, let world, let threads {
            try Worker(master: master, world: world, threads: threads, rounds: rounds, operations: operations, bytes: bytes).run()
            return
        }
        print("peers  procs  links/peer  formation ms (median, max)  op us  master CPU us/formation  master CPU us/op")
        for n in worldSizes { try measure(worldSize: n) }
    }

    /// One group of `n`: the master here, the communicators in `processes` children.
    private func measure(worldSize n: Int) throws {
        let master = try Master(host: "127.0.0.1", port: 0, configuration: try Configuration.fromEnvironment())
        defer { master.shutdown() }
        let group = LocalGroup()
        var children: [ChildProcess] = []
        let spread = min(processes, n)
        for index in 0 ..< spread {
            let threads = n / spread + (index < n % spread ? 1 : 0)
            children.append(try group.start("process \(index)", executable: ChildProcess.currentExecutable(),
                                            arguments: ["--master", master.endpoint, "--world", "\(n)", "--threads", "\(threads)",
                                                        "--rounds", "\(rounds)", "--operations", "\(operations)", "--bytes", "\(bytes)"],
                                            captureOutput: true))
        }
        // The master's CPU at each epoch from the one that first held all n: this thread only
        // watches, and its own CPU is taken out.
        var marks: [(epoch: UInt64, cpu: Double)] = []
        let deadline = monotonicMilliseconds() + 1_800_000
        while children.contains(where: { $0.waitForExit(timeoutMilliseconds: 0) == nil }) {
            let status = master.currentStatus
            if status.worldSize == n, marks.last?.epoch != status.epoch {
                marks.append((status.epoch, cpuSeconds(CLOCK_PROCESS_CPUTIME_ID) - cpuSeconds(CLOCK_THREAD_CPUTIME_ID)))
            }
            guard monotonicMilliseconds() < deadline else { group.stopRunning(); throw ValidationError("group of \(n) did not finish in 30 minutes") }
            usleep(200)
        }
        try group.waitAll(timeoutMilliseconds: 10_000)
        guard let line = children.lazy.flatMap({ $0.output(timeoutMilliseconds: 1_000).split(separator: "\n") }).first(where: { $0.hasPrefix("result ") }),
              let result = try? JSONDecoder().decode(WorkerResult.self, from: Data(line.dropFirst(7).utf8)) else {
            throw ValidationError("group of \(n): no result line from rank 0")
        }
        // Epochs after the group formed: `rounds` formations (each with a barrier and an
        // all-reduce of the timings), then the timed collectives and one more formation.
        let steps = zip(marks, marks.dropFirst()).map { $1.cpu - $0.cpu }
        guard steps.count >= rounds + 1 else { throw ValidationError("group of \(n): saw \(marks.count) epochs, expected \(rounds + 2)") }
        let perFormation = steps.prefix(rounds).sorted()[rounds / 2]
        let perOperation = max(0, steps[rounds] - perFormation) / Double(operations + 1)
        let formations = result.formationSeconds.sorted()
        print([pad("\(n)", 5), pad("\(spread)", 6), pad("\(result.linksPerPeer)", 11),
               pad(String(format: "%.1f, %.1f", formations[formations.count / 2] * 1e3, formations.last! * 1e3), 27),
               pad(String(format: "%.0f", result.operationSeconds * 1e6), 6),
               pad(String(format: "%.0f", perFormation * 1e6), 24), String(format: "%.1f", perOperation * 1e6)].joined(separator: " "))
    }
}

/// What rank 0 reports for its group (the slowest member's times).
struct WorkerResult: Codable {
    var formationSeconds: [Double]
    var operationSeconds: Double
    /// The most connections any member held (the master's included).
    var linksPerPeer: Int
}

func cpuSeconds(_ clock: clockid_t) -> Double {
    var now = timespec()
    clock_gettime(clock, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

func pad(_ text: String, _ width: Int) -> String { text.count >= width ? text : text + String(repeating: " ", count: width - text.count) }
