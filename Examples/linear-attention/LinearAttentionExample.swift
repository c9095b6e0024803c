// Sequence-parallel gated linear attention over Chorus: every peer runs its shard of the sequence
// from a zero state, All-Scan (affine operator, decay per head) hands it the state at its shard's
// start, and its outputs match a single-process run of the whole sequence.
//
//   swift run chorus-linear-attention --peers 4
import ArgumentParser
import Chorus
import ChorusLauncher
#if canImport(Glibc)
import Glibc
#endif

@main
struct LinearAttentionExample: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chorus-linear-attention",
        abstract: "Sequence-parallel gated linear attention with All-Scan, checked against one process.")

    @Option(help: "Peer processes (each takes one shard).") var peers = 4
    @Option(help: "Tokens per shard.") var tokens = 64
    @Option(help: "Heads.") var heads = 2
    @Option(help: "Key and value dimension.") var dim = 8
    @Option(help: .hidden) var master: String?

    func run() throws {
        let layer = GatedLinearAttention(heads: heads, keyDim: dim, valueDim: dim)
        guard let master else { return try launch() }
        let c = try Communicator(master: master)
        while c.worldSize < peers { try c.updateTopology(minimumWorldSize: peers) }
        let shard = c.rank * tokens ..< (c.rank + 1) * tokens
        // 1. The shard from a zero state: its final local state and gate product per head.
        let local = layer.forward(shard, initial: [Float](repeating: 0, count: layer.stateCount))
        // 2. All-Scan: the state at the shard's start (the decay broadcasts over d_k x d_v).
        let scan = try c.allScan(local.state, op: .affine, decay: local.decay)
        // 3. The shard again, from the true starting state (a real model would add the correction
        //    q_t · (G_t X) to the local outputs instead of recomputing; this keeps the example short).
        let outputs = layer.forward(shard, initial: scan.exclusive).outputs
        let reference = layer.forward(0 ..< shard.upperBound, initial: [Float](repeating: 0, count: layer.stateCount))
            .outputs[shard.lowerBound...]
        var worst: Float = 0
        for (o, r) in zip(outputs, reference) {
            for (a, b) in zip(o, r) { worst = max(worst, abs(a - b) / max(1, abs(b))) }
        }
        print("rank \(c.rank): tokens \(shard.lowerBound)..<\(shard.upperBound), max relative error vs one process \(worst)")
        fflush(nil)
        try c.leave()
        // The chunked and the sequential runs round differently; anything near f32 epsilon x length is right.
        if worst > 1e-3 { throw ExitCode.failure }
    }

    private func launch() throws {
        let m = try Master(host: "127.0.0.1", port: 0, configuration: try Configuration.fromEnvironment())
        defer { m.shutdown() }
        let group = LocalGroup()
        for index in 0 ..< peers {
            try group.start("shard \(index)", executable: ChildProcess.currentExecutable(),
                            arguments: Array(CommandLine.arguments.dropFirst()) + ["--master", m.endpoint])
        }
        do {
            try group.waitAll(timeoutMilliseconds: 120_000)
        } catch {
            print("MISMATCH or failure: \(error)")
            throw ExitCode.failure
        }
        print("all \(peers) shards match the single-process run")
    }
}
