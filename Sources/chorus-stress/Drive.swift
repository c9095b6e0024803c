import ArgumentParser
import Chorus
import ChorusLauncher
#if canImport(Glibc)
import Glibc
#endif

/// The driver: an embedded master, a changing set of peer processes, and a seeded schedule of
/// joins, graceful leaves, SIGKILLs and SIGSTOP/SIGCONT, and with `--master-restart-ms` the master
/// shut down and started again on its port; then the checker over every peer's log.
struct Drive: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run", abstract: "Run a churn stress test (default).")

    @Option(help: "Most peers alive at once.") var peers = 4
    @Option(help: "Fewest peers the schedule leaves alive.") var minPeers = 2
    @Option(help: "Run this long (seconds).") var duration: Int?
    @Option(help: "Run until this many collectives have been decided.") var ops: Int?
    @Option(help: "Seed of the churn schedule.") var seed: UInt64 = 1
    @Option(help: "Mean time between churn events (ms).") var eventIntervalMs = 400
    @Option(help: "Heartbeat silence that evicts a peer at the latest (ms; hang suspicion evicts sooner); the hang bound derives from it.") var peerTimeoutMs = 1500
    @Option(help: "Elements per all-reduce (f32).") var count = 1024
    @Option(help: "Write the report as JSON here.") var json: String?
    @Option(help: "Keep the peer logs here (default: a fresh directory under /tmp).") var logDir: String?
    @Option(help: "Mean time between master restarts (ms): the master shuts down (every connection closes, as when it is killed) and a new one starts on its port after --master-down-ms. Off by default.")
    var masterRestartMs: Int?
    @Option(help: "How long the master stays down at a restart (ms).") var masterDownMs = 200

    func validate() throws {
        guard (duration == nil) != (ops == nil) else { throw ValidationError("give exactly one of --duration and --ops") }
        guard minPeers >= 2, peers >= minPeers + 1 else { throw ValidationError("need --min-peers >= 2 and --peers > --min-peers") }
        guard (masterRestartMs ?? 1) > 0, masterDownMs >= 0 else { throw ValidationError("need --master-restart-ms > 0 and --master-down-ms >= 0") }
    }

    func run() throws {
        let directory = logDir ?? makeTemporaryDirectory()
        if mkdir(directory, 0o755) != 0 && errno != EEXIST { throw CheckerError("cannot create \(directory)") }
        let stopFile = directory + "/stop"
        unlink(stopFile)
        var masterConfiguration = try Configuration.fromEnvironment()
        masterConfiguration.peerTimeout = .milliseconds(peerTimeoutMs)
        // The library's heartbeat (hang suspicion learns its rhythm), shorter if the timeout is tiny.
        let heartbeatMs = max(10, min(100, peerTimeoutMs / 6))
        masterConfiguration.heartbeatInterval = .milliseconds(heartbeatMs)
        // A restarted master waits this long for the members to return (they try as long): a member
        // stopped across a restart then either returns in time or is lost like any stopped one.
        let windowMs = peerTimeoutMs * 2
        masterConfiguration.masterWindow = .milliseconds(windowMs)
        var master = try Master(host: "127.0.0.1", port: 0, configuration: masterConfiguration)
        let endpoint = master.endpoint
        let baseline = Resources.current()
        let events = try StressLog(path: directory + "/driver.log")
        var random = SplitMix64(seed: seed)
        var alive: [Int: ChildProcess] = [:], slots = ChurnSlots(peerTimeoutMs: peerTimeoutMs), next = 0
        let environment = ["CHORUS_PEER_TIMEOUT_MS": "\(peerTimeoutMs)", "CHORUS_HEARTBEAT_MS": "\(heartbeatMs)",
                           "CHORUS_OP_TIMEOUT_MS": "\(peerTimeoutMs * 20)", "CHORUS_MASTER_WINDOW_MS": "\(windowMs)"]
        func spawn() throws {
            alive[next] = try ChildProcess(executable: ChildProcess.currentExecutable(),
                                           arguments: ["peer", "--master", endpoint, "--log", "\(directory)/peer-\(next).log",
                                                       "--stop-file", stopFile, "--count", "\(count)"],
                                           environment: environment)
            events.write("event kind=join slot=\(next) t=\(monotonicMicroseconds())")
            next += 1
        }
        for _ in 0 ..< peers { try spawn() }
        print("chorus-stress: \(peers) peers, seed \(seed), logs in \(directory)")
        let started = monotonicMicroseconds()
        var lastProgress = started
        func nextRestart() -> UInt64? {
            masterRestartMs.map { monotonicMicroseconds() + (random.next(below: UInt64($0) * 2) + 1) * 1000 }
        }
        var restartAt = nextRestart()
        while true {
            let elapsed = monotonicMicroseconds() - started
            if let duration, elapsed >= UInt64(duration) * 1_000_000 { break }
            if let ops, monotonicMicroseconds() - lastProgress > 2_000_000 {
                lastProgress = monotonicMicroseconds()
                let decided = Checker(directory: directory, count: count, hangBoundMs: 0).decidedOperations()
                print("  \(elapsed / 1_000_000) s: \(decided) collectives decided")
                if decided >= ops { break }
            }
            usleep(UInt32(random.next(below: UInt64(eventIntervalMs) * 2) + 1) * 1000)
            if let due = restartAt, monotonicMicroseconds() >= due {
                master.shutdown()
                events.write("event kind=master t=\(monotonicMicroseconds())")
                usleep(UInt32(masterDownMs * 1000))
                master = try Master(host: "127.0.0.1", port: master.port, configuration: masterConfiguration)
                restartAt = nextRestart()
                continue
            }
            // Reap peers that exited (evicted after a stop, or finished a leave); resume stopped ones.
            for (slot, child) in alive where child.waitForExit(timeoutMilliseconds: 0) != nil {
                alive[slot] = nil
                slots.exited(slot)
            }
            for slot in slots.resumeDue(at: monotonicMicroseconds()) {
                alive[slot]?.signal(SIGCONT)
                events.write("event kind=cont slot=\(slot) t=\(monotonicMicroseconds())")
            }
            let running = slots.running(alive.keys, at: monotonicMicroseconds())
            let choice = random.next(below: 8)
            if alive.count < peers && (choice < 2 || running.count <= minPeers) {
                try spawn()
            } else if running.count > minPeers, let slot = running.randomElement(using: &random) {
                switch choice {
                case 2, 3, 4:
                    alive[slot]?.signal(SIGKILL)
                    events.write("event kind=kill slot=\(slot) t=\(monotonicMicroseconds())")
                case 5, 6:
                    alive[slot]?.signal(SIGSTOP)
                    slots.stop(slot, at: monotonicMicroseconds())
                    events.write("event kind=stop slot=\(slot) t=\(monotonicMicroseconds())")
                default:
                    alive[slot]?.signal(SIGUSR1)
                    events.write("event kind=leave slot=\(slot) t=\(monotonicMicroseconds())")
                }
            }
        }
        // Stop: resume everyone, ask them to finish, and count any that do not as hung.
        for slot in slots.stopped.keys { alive[slot]?.signal(SIGCONT) }
        close(open(stopFile, O_CREAT | O_WRONLY, 0o644))
        // One deadline for all of them, not one per child.
        let deadline = monotonicMilliseconds() + peerTimeoutMs * 10 + 10_000
        var stragglers = 0
        for (_, child) in alive where child.waitForExit(timeoutMilliseconds: max(0, deadline - monotonicMilliseconds())) == nil {
            stragglers += 1
            child.signal(SIGKILL)
            _ = child.waitForExit(timeoutMilliseconds: 5000)
        }
        events.close()
        master.shutdown()
        usleep(200_000) // let the master's sockets close
        let report = Checker(directory: directory, count: count, hangBoundMs: Checker.hangBound(peerTimeoutMs: peerTimeoutMs))
            .report(stragglers: stragglers, resourcesBefore: baseline, resourcesAfter: Resources.current())
        print(report.table)
        if let json { try report.writeJSON(to: json) }
        if !report.passed { throw ExitCode.failure }
    }

    private func makeTemporaryDirectory() -> String {
        var template = Array("/tmp/chorus-stress-XXXXXX".utf8CString)
        return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
    }
}
