import ArgumentParser
import Chorus
import ChorusLauncher
#if canImport(Glibc)
import Glibc
#endif

/// One churning peer: all-reduces until the driver creates the stop file, re-forming the ring when
/// peers wait to join or leave or after an abort; SIGUSR1 asks it to leave gracefully.
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
        while access(stopFile, F_OK) != 0 {
            var pending = sigset_t()
            sigpending(&pending)
            if sigismember(&pending, SIGUSR1) == 1 {
                try leave(c)
                out.write("event kind=left peer=\(c.peerID) t=\(monotonicMicroseconds())")
                return
            }
            do {
                if c.topologyChangePending { try c.updateTopology() }
                if c.worldSize < 2 {
                    try c.updateTopology(minimumWorldSize: 2)
                    continue
                }
            } catch ChorusError.timedOut(_) {
                continue
            } catch let error as ChorusError where error.isRetryable {
                continue // the ring could not be connected (a neighbour died meanwhile): try again
            }
            try step(c, out)
        }
        try leave(c)
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

    private func step(_ c: Communicator, _ out: StressLog) throws {
        let epoch = c.epoch, members = c.members
        // The op id this all-reduce gets: the master numbers operations per epoch from 1.
        let opID = c.lastOperationID + 1
        let input = stressInput(peer: c.peerID, epoch: epoch, op: opID, count: count)
        var values = input
        let start = monotonicMicroseconds()
        var outcome = "ok"
        do {
            try c.allReduce(&values, op: .sum)
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
                  + " outcome=\(outcome) hash=\(outcome == "ok" ? stressHash(values) : 0) start=\(start) end=\(monotonicMicroseconds())")
        if outcome.hasPrefix("fatal:") { throw ExitCode(3) }
        if outcome != "ok" {
            do {
                try c.updateTopology()
            } catch let error as ChorusError {
                if case .timedOut = error { return } // the next step asks again
                guard error.isRetryable else { throw error }
            }
        }
    }
}
