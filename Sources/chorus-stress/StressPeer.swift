import ArgumentParser
import Chorus
import ChorusLauncher
#if canImport(Glibc)
import Glibc
#endif

/// One churning peer: all-reduces until the driver creates the stop file, re-forming the ring when
/// peers wait to join or leave or after an abort; SIGUSR1 asks it to leave gracefully. It keeps a
/// shared state (`count` f32 weights) that every successful all-reduce updates the same way, and
/// synchronizes it as the first operation of every epoch, so a joiner catches up; every logged line
/// carries the state's hash.
struct StressPeer: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "peer", abstract: "One stress peer (started by the driver).")

    @Option var master: String
    @Option var log: String
    @Option var stopFile: String
    @Option var count = 1024

    func run() throws {
        // SIGUSR1 stays pending until the loop looks for it (blocked before any thread starts).
        var leaveSignal = sigset_t()
        sigemptyset(&leaveSignal)
        sigaddset(&leaveSignal, SIGUSR1)
        sigprocmask(SIG_BLOCK, &leaveSignal, nil)
        let out = try StressLog(path: log)
        defer { out.close() }
        var configuration = try Configuration.fromEnvironment()
        configuration.admissionTimeout = .seconds(2) // so the loop keeps looking at the stop file
        var communicator: Communicator?
        while communicator == nil {
            if access(stopFile, F_OK) == 0 { return }
            do {
                communicator = try Communicator(master: master, configuration: configuration)
            } catch ChorusError.timedOut(_) {
                continue
            }
        }
        let c = communicator!
        out.write("event kind=admitted peer=\(c.peerID) t=\(monotonicMicroseconds())")
        do {
            try train(c, out)
        } catch let error as ChorusError {
            if case .evicted = error { logEviction(c, out) }
            throw error
        }
    }

    /// The checker counts evictions of peers the driver never stopped (a slow peer taken for a hung one).
    private func logEviction(_ c: Communicator, _ out: StressLog) {
        out.write("event kind=evicted peer=\(c.peerID) t=\(monotonicMicroseconds())")
    }

    /// Steps until the stop file appears or SIGUSR1 asks this peer to leave.
    private func train(_ c: Communicator, _ out: StressLog) throws {
        var state = try StressState(count: count)
        while access(stopFile, F_OK) != 0 {
            var pending = sigset_t()
            sigpending(&pending)
            if sigismember(&pending, SIGUSR1) == 1 {
                try leave(c)
                out.write("event kind=left peer=\(c.peerID) t=\(monotonicMicroseconds())")
                return
            }
            do {
                if c.topologyChangePending { try reform(c, out) }
                if c.worldSize < 2 {
                    try reform(c, out, minimumWorldSize: 2)
                    continue
                }
            } catch ChorusError.timedOut(_) {
                continue
            } catch let error as ChorusError where error.isRetryable {
                continue // the ring could not be connected (a neighbour died meanwhile): try again
            }
            try step(c, &state, out)
        }
        try leave(c)
    }

    /// Re-forms the ring and logs when it is done (the checker's "re-forming" phase of a recovery ends there).
    private func reform(_ c: Communicator, _ out: StressLog, minimumWorldSize: Int = 1) throws {
        try c.updateTopology(minimumWorldSize: minimumWorldSize)
        out.write("event kind=reformed peer=\(c.peerID) epoch=\(c.epoch) t=\(monotonicMicroseconds())")
    }

    /// Leaves, asking again while the others are slow to reach their safe point (the admission
    /// timeout is short here so that the loop keeps watching the stop file).
    private func leave(_ c: Communicator) throws {
        for _ in 0 ..< 30 {
            do {
                return try c.leave()
            } catch ChorusError.timedOut(_) {
                continue
            }
        }
        try c.leave()
    }

    private func step(_ c: Communicator, _ state: inout StressState, _ out: StressLog) throws {
        let epoch = c.epoch, members = c.members
        // The op id this operation gets: the master numbers operations per epoch from 1.
        let opID = c.lastOperationID + 1
        let input = stressInput(peer: c.peerID, epoch: epoch, op: opID, count: count)
        var values = input
        let start = monotonicMicroseconds()
        var outcome = "ok"
        let synchronizing = state.syncedEpoch != epoch
        do {
            if synchronizing {
                try state.synchronize(c)
            } else {
                try c.allReduce(&values, op: .sum)
                state.apply(values)
            }
        } catch let error as ChorusError {
            // A verdict's abort is "abort:"; a local refusal (no operation took place) is "local:".
            switch error {
            case .aborted(let reason): outcome = "abort:" + compact(reason.description)
            case .topologyUpdateRequired, .topologyFailed: outcome = "local:" + compact(error.description)
            default: outcome = "fatal:" + compact(error.description)
            }
            if values != input { outcome = "fatal:input_not_restored" }
        }
        out.write("op peer=\(c.peerID) epoch=\(epoch) op=\(opID) participants=\(members.map(String.init).joined(separator: ","))"
                  + " kind=\(synchronizing ? "sync" : "allreduce") outcome=\(outcome)"
                  + " hash=\(outcome == "ok" && !synchronizing ? stressHash(values) : 0) state=\(state.shared.contentHash)"
                  + " start=\(start) end=\(monotonicMicroseconds())")
        if outcome.hasPrefix("fatal:") {
            if outcome.hasPrefix("fatal:evicted") { logEviction(c, out) }
            throw ExitCode(3)
        }
        if outcome != "ok" {
            do {
                try reform(c, out)
            } catch let error as ChorusError {
                if case .timedOut = error { return } // the next step asks again
                guard error.isRetryable else { throw error }
            }
        }
    }
}

/// The shared state a stress peer keeps: weights that start the same everywhere (revision 0) and
/// change with every successful all-reduce. The revision moves by one per synchronization (after a
/// successful one), as `StateElection` wants; a joiner starts at 0 and is outdated.
struct StressState {
    let shared = SharedState()
    private let weights: SharedTensor
    /// The epoch whose first operation was a successful synchronization.
    private(set) var syncedEpoch: UInt64 = 0
    private var bumpBeforeNextSync = false

    init(count: Int) throws {
        weights = try shared.add("weights", values: (0 ..< count).map { Float($0 % 1000) * 0.5 })
    }

    mutating func synchronize(_ c: Communicator) throws {
        let epoch = c.epoch
        if bumpBeforeNextSync { shared.revision += 1 }
        bumpBeforeNextSync = false
        try c.synchronize(shared)
        bumpBeforeNextSync = true
        syncedEpoch = epoch
    }

    /// The same deterministic update at every member: w = w/2 + sum.
    func apply(_ sum: [Float]) {
        weights.withUnsafeMutableBufferPointer(as: Float.self) { w in
            for i in w.indices { w[i] = w[i] * 0.5 + sum[i] }
        }
    }
}
