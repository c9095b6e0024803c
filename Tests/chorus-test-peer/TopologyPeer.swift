// --optimize-topology: once the file named by --wait-for-file exists (the test has shaped the
// network by then), the peer orders the ring by measured link speed and prints
//   OPTIMIZED epoch=E rank=R ring=ID,ID,... reordered=true|false measured=K before=B after=A
// (B and A: the ring's slowest link before and after, in Mbit/s), then runs its rounds as usual.
// When a member is lost while the links are measured it prints
//   OPTIMIZE-ABORT retryable=true|false error=TEXT
// and re-forms with updateTopology() before its rounds.
import Chorus
import ChorusLauncher
#if canImport(Glibc)
import Glibc
#endif

func optimizeTopologyWhenTold(_ communicator: Communicator) throws {
    if let file = option("wait-for-file") {
        let deadline = monotonicMilliseconds() + 60_000
        while access(file, F_OK) != 0 {
            guard monotonicMilliseconds() < deadline else { throw ChorusError.timedOut("the test's go-ahead file \(file)") }
            usleep(10_000)
        }
    }
    let result: TopologyOptimization
    do {
        result = try communicator.optimizeTopology()
    } catch let error as ChorusError {
        say("OPTIMIZE-ABORT retryable=\(error.isRetryable) error=\(error)")
        guard error.isRetryable else { throw error }
        try communicator.updateTopology()
        return
    }
    func megabits(_ bytesPerSecond: Double) -> Int { Int(bytesPerSecond * 8 / 1e6) }
    say("OPTIMIZED epoch=\(communicator.epoch) rank=\(communicator.rank) ring=\(result.ring.map(String.init).joined(separator: ",")) "
        + "reordered=\(result.reordered) measured=\(result.measuredPairs) before=\(megabits(result.slowestLinkBefore)) after=\(megabits(result.slowestLinkAfter))")
}
