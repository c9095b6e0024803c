// The README's main job: an embedded master and several peer processes on loopback doing
// all-reduces, with one peer killed half way so the survivors show the abort, the retry with the
// smaller world, and results that are still exact.
import ArgumentParser
import Chorus
import ChorusLauncher
#if canImport(Glibc)
import Glibc
#endif

@main
struct ChorusDemo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chorus-demo",
        abstract: "Runs a local Chorus group: an embedded master and peer processes doing all-reduces.",
        subcommands: [Local.self, Peer.self], defaultSubcommand: Local.self)
}

struct Local: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Start the master and the peers (default).")

    @Option(help: "Peer processes to start.") var peers = 4
    @Option(help: "All-reduce rounds each peer runs.") var rounds = 6
    @Option(help: "Elements per all-reduce.") var count = 1 << 20
    @Flag(help: "Do not kill a peer half way.") var noKill = false

    func run() throws {
        guard peers >= 1 else { throw ValidationError("--peers must be at least 1") }
        var configuration = try Configuration.fromEnvironment() // CHORUS_SECRET_FILE and the rest, as the peers see them
        configuration.logger.logLevel = .info // the master's registrations, epochs and lost peers, on stderr
        let master = try Master(host: "127.0.0.1", port: 0, configuration: configuration)
        print("master listening on \(master.endpoint); starting \(peers) peers")
        let victim = noKill || peers < 2 ? -1 : peers - 1
        let group = LocalGroup()
        for index in 0 ..< peers {
            try group.start("peer process \(index)", executable: ChildProcess.currentExecutable(),
                            arguments: ["peer", "--master", master.endpoint, "--rounds", "\(rounds)",
                                        "--count", "\(count)", "--world", "\(peers)",
                                        "--die-before-round=\(index == victim ? rounds / 2 : -1)"],
                            expectedExitCodes: index == victim ? [128 + SIGKILL] : [0])
        }
        do {
            try group.waitAll(timeoutMilliseconds: 300_000)
        } catch {
            master.shutdown()
            print("demo FAILED: \(error)")
            throw ExitCode.failure
        }
        master.shutdown()
        print("demo finished: every surviving peer got exact results (peer process \(victim) was killed on purpose)")
    }
}

struct Peer: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "One peer (started by `local`).")

    @Option var master: String
    @Option var rounds: Int
    @Option var count: Int
    @Option var world: Int
    @Option(help: "SIGKILL this process just before this round (-1: never).") var dieBeforeRound = -1

    func run() throws {
        let communicator = try Communicator(master: master)
        while communicator.worldSize < world {
            try communicator.updateTopology(minimumWorldSize: world)
        }
        let tag = "peer \(communicator.peerID)"
        say("\(tag): admitted as rank \(communicator.rank) of \(communicator.worldSize) (epoch \(communicator.epoch))")
        var round = 0
        while round < rounds {
            if round == dieBeforeRound {
                say("\(tag): killing myself with SIGKILL before round \(round)")
                kill(getpid(), SIGKILL)
            }
            // Every element's expected sum is known exactly: each rank contributes rank+1+round+i%7.
            // withRetry re-forms the ring after a failure every survivor saw, and runs the round again.
            let started = ContinuousClock.now
            let (values, size) = try communicator.withRetry { attempt in
                if attempt > 1 {
                    say("\(tag): round \(round) failed on every survivor; now rank \(communicator.rank) of \(communicator.worldSize) (epoch \(communicator.epoch)), attempt \(attempt)")
                }
                let rank = communicator.rank, size = communicator.worldSize
                var values = (0 ..< count).map { Float(rank + 1 + round + $0 % 7) }
                try communicator.allReduce(&values, op: .sum)
                return (values, size)
            }
            let elapsed = ContinuousClock.now - started
            let ranksSum = size * (size + 1) / 2
            let wrong = values.indices.filter { values[$0] != Float(ranksSum + size * (round + $0 % 7)) }.count
            say("\(tag): round \(round) world \(size): all-reduce of \(count) f32 in \(milliseconds(elapsed)) ms, \(wrong) wrong")
            if wrong > 0 { throw ExitCode.failure }
            round += 1
        }
        try communicator.leave()
    }

    private func milliseconds(_ d: Duration) -> String {
        let hundredths = Int(d.components.seconds) * 100_000 + Int(d.components.attoseconds / 10_000_000_000_000)
        let fraction = hundredths % 100
        return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
    }

    private func say(_ line: String) {
        print(line)
        fflush(nil)
    }
}
