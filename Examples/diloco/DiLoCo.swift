// Data-parallel training in the DiLoCo style over Chorus: every peer takes local SGD steps on its own
// data, then the peers all-reduce (average) their parameter deltas and apply the same outer Nesterov
// step, so the parameters stay bit-identical. The parameters and the outer momentum are a
// SharedState synchronized at the top of every outer step: a joiner catches up there, and a peer that
// drifted would be repaired. `local` runs a master and peers, starts a joiner while they train, has
// one peer SIGKILL itself and another leave gracefully.
import ArgumentParser
import Chorus
import ChorusLauncher
#if canImport(Glibc)
import Glibc
#endif

@main
struct ChorusDiLoCo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chorus-diloco",
        abstract: "DiLoCo-style training of a small MLP across churning peers.",
        subcommands: [LocalRun.self, TrainingPeer.self], defaultSubcommand: LocalRun.self)
}

func say(_ line: String) {
    print(line)
    fflush(nil)
}

struct LocalRun: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "local", abstract: "Start a master and peers (default).")

    @Option(help: "Peers that start together.") var peers = 3
    @Option(help: "Outer steps.") var steps = 40
    @Option(help: "Start one more peer after this many milliseconds (-1: none).") var joinAfterMs = 1200
    @Option(help: "The second peer SIGKILLs itself at this outer step (-1: never).") var killAt = 18
    @Option(help: "The third peer leaves gracefully at this outer step (-1: never).") var leaveAt = 28

    func run() throws {
        var configuration = try Configuration.fromEnvironment() // CHORUS_SECRET_FILE and the rest, as the peers see them
        configuration.logger.logLevel = .info // the master's registrations, epochs and lost peers, on stderr
        let master = try Master(host: "127.0.0.1", port: 0, configuration: configuration)
        say("master on \(master.endpoint); \(peers) peers train \(steps) outer steps")
        let group = LocalGroup()
        func start(_ index: Int, _ extra: [String]) throws {
            let killed = index == 1 && killAt >= 0
            try group.start("peer process \(index)", executable: ChildProcess.currentExecutable(),
                            arguments: ["peer", "--master", master.endpoint, "--steps", "\(steps)"] + extra,
                            expectedExitCodes: killed ? [128 + SIGKILL] : [0])
        }
        for index in 0 ..< peers {
            try start(index, ["--world", "\(peers)", "--die-at=\(index == 1 ? killAt : -1)", "--leave-at=\(index == 2 ? leaveAt : -1)"])
        }
        if joinAfterMs >= 0 {
            usleep(UInt32(joinAfterMs) * 1000)
            try start(peers, ["--world", "1"])
        }
        defer { master.shutdown() }
        do {
            try group.waitAll(timeoutMilliseconds: 600_000)
        } catch {
            say("FAILED: \(error)")
            throw ExitCode.failure
        }
        say("every peer process exited as planned")
    }
}

struct TrainingPeer: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "peer", abstract: "One training peer.")

    @Option var master: String
    @Option var steps: Int
    @Option(help: "Wait for this many peers before the first step.") var world = 1
    @Option var dieAt = -1
    @Option var leaveAt = -1
    @Option(help: "Local SGD steps per outer step.") var innerSteps = 20
    @Option(help: "Pause per outer step, standing in for a bigger model's compute.") var stepMs = 60

    static let innerLearningRate: Float = 0.5, outerLearningRate: Float = 0.7, outerMomentum: Float = 0.9

    func run() throws {
        let c = try Communicator(master: master)
        while c.worldSize < world { try c.updateTopology(minimumWorldSize: world) }
        let me = "peer \(c.peerID)"
        say("\(me): admitted in epoch \(c.epoch) with \(c.worldSize) peers")
        let fresh = world == 1 // a late joiner starts with nothing and must catch up
        let state = SharedState()
        let parameters = try state.add("parameters", values: fresh ? [Float](repeating: 0, count: Model.parameterCount)
                                                                   : Model.initialParameters(seed: 42))
        let momentum = try state.add("momentum", count: Model.parameterCount, dataType: .float32)
        let localLoss = try state.add("local-loss", values: [Float(0)], allowedToDiffer: true)
        let heldOut = Batch.generate(count: 512, seed: 7)

        while state.revision < UInt64(steps) {
            let before = state.revision
            // withRetry re-forms the group when peers wait or a step failed everywhere, synchronizes
            // the state (a joiner catches up here) and runs the outer step again after a failure.
            let left = try c.withRetry(synchronizing: state) { attempt -> Bool in
                if attempt > 1 { say("\(me): the step failed on every survivor; retrying with \(c.worldSize) peers (epoch \(c.epoch))") }
                if state.revision > before { say("\(me): caught up to step \(state.revision)") }
                let step = Int(state.revision)
                if step == dieAt { say("\(me): SIGKILL at step \(step)"); raise(SIGKILL) }
                if step == leaveAt { return true }
                // Local steps on this peer's own data, from the shared parameters.
                let global = parameters.values(as: Float.self)
                var local = global
                var gradient: [Float]? = []
                for inner in 0 ..< innerSteps {
                    let batch = Batch.generate(count: 64, seed: c.peerID << 40 ^ UInt64(step) << 16 ^ UInt64(inner))
                    let loss = Model.loss(local, batch, gradient: &gradient)
                    for i in local.indices { local[i] -= Self.innerLearningRate * gradient![i] }
                    localLoss.assign([loss])
                }
                // Outer step: the average delta, then the same Nesterov update everywhere.
                var delta = zip(global, local).map { $0 - $1 }
                try c.allReduce(&delta, op: .avg)
                momentum.withUnsafeMutableBufferPointer(as: Float.self) { m in
                    parameters.withUnsafeMutableBufferPointer(as: Float.self) { p in
                        for i in p.indices {
                            m[i] = Self.outerMomentum * m[i] + delta[i]
                            p[i] -= Self.outerLearningRate * (delta[i] + Self.outerMomentum * m[i])
                        }
                    }
                }
                state.revision += 1
                return false
            }
            if left {
                try c.leave()
                say("\(me): left at step \(state.revision)")
                return
            }
            if c.rank == 0 {
                var none: [Float]? = nil
                let loss = Model.loss(parameters.values(as: Float.self), heldOut, gradient: &none)
                say("step \(state.revision) world \(c.worldSize) held-out loss \(loss) state \(String(state.contentHash, radix: 16))")
            }
            usleep(UInt32(stepMs) * 1000)
        }
        say("\(me): done at step \(state.revision), state \(String(state.contentHash, radix: 16))")
        try c.leave()
    }
}
