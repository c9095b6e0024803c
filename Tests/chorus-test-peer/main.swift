// A peer process for the integration tests: joins a master, runs in-place all-reduces in a loop,
// and prints one line per event, which the tests parse:
//   READY rank=R world=N epoch=E id=I connections=C
//   OK round=K epoch=E world=N correct=true|false hash=H
//   ABORT round=K epoch=E retryable=true|false restored=true|false ms=M error=TEXT
//   TOPOLOGY epoch=E world=N rank=R ms=M
//   REFORM-FAILED error=TEXT (a retryable failure of updateTopology, which is then retried)
//   DONE
// Inputs are small integers (rank + round + i % 13), so every expected sum is exact.
// With --with-retry each round runs inside `Communicator.withRetry`, synchronizing a small shared
// state (updated the same way after every round) before each attempt, and prints instead
//   OK round=K epoch=E world=N correct=true|false hash=H attempts=A state=S
// With --scan the collective is an All-Scan (sum); "correct" checks the inclusive prefix.
// M is how long the failed call, and the re-forming after it, took (milliseconds). With --gap-ms G
// it sleeps G ms before each round (a training step's compute). With --stop-before-round K it SIGSTOPs itself before round K. With --state-mib the peer synchronizes shared state first (StatePeer.swift); with --collective it
// runs rounds of another collective and checks restore-on-abort (RestorePeer.swift); with
// --optimize-topology it orders the ring by link speed first (TopologyPeer.swift); with --in-flight B
// each round is B all-reduces in flight together (InFlightPeer.swift).
import Chorus
import ChorusLauncher
#if canImport(Glibc)
import Glibc
#endif

func say(_ line: String) {
    print(line)
    fflush(nil)
}

func argument(_ name: String, default value: Int) -> Int {
    guard let index = CommandLine.arguments.firstIndex(of: "--\(name)"), index + 1 < CommandLine.arguments.count,
          let parsed = Int(CommandLine.arguments[index + 1]) else { return value }
    return parsed
}

guard let masterIndex = CommandLine.arguments.firstIndex(of: "--master"), masterIndex + 1 < CommandLine.arguments.count else {
    say("usage: chorus-test-peer --master HOST:PORT [--world N] [--count C] [--rounds R]")
    exit(64)
}
let master = CommandLine.arguments[masterIndex + 1]
let world = argument("world", default: 2)
let count = argument("count", default: 1 << 20)
let rounds = argument("rounds", default: 5)
let scan = CommandLine.arguments.contains("--scan")
let withRetry = CommandLine.arguments.contains("--with-retry")
let gapMilliseconds = argument("gap-ms", default: 0)

func inputs(rank: Int, round: Int) -> [Float] {
    (0 ..< count).map { Float(rank + round + $0 % 13) }
}

func hash(_ values: [Float]) -> UInt64 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    values.withUnsafeBytes { for byte in $0 { h = (h ^ UInt64(byte)) &* 0x100_0000_01B3 } }
    return h
}

do {
    let communicator = try Communicator(master: master)
    while communicator.worldSize < world { try communicator.updateTopology(minimumWorldSize: world) }
    say("READY rank=\(communicator.rank) world=\(communicator.worldSize) epoch=\(communicator.epoch) id=\(communicator.peerID) connections=\(communicator.openConnectionCount)")
    if CommandLine.arguments.contains("--optimize-topology") { try optimizeTopologyWhenTold(communicator) }
    if CommandLine.arguments.contains("--state-mib") { try synchronizeState(communicator) }
    if let collective = option("collective") {
        try runRestoreRounds(communicator, collective: collective)
        try communicator.leave()
        say("DONE")
        exit(0)
    }
    if let burst = option("in-flight").flatMap({ Int($0) }) {
        try runInFlightRounds(communicator, burst: burst)
        try communicator.leave()
        say("DONE")
        exit(0)
    }
    if withRetry {
        try runWithRetry(communicator)
        try communicator.leave()
        say("DONE")
        exit(0)
    }
    var round = 0
    while round < rounds {
        // --stop-before-round K: the peer stops itself (SIGSTOP) just before round K's collective, so
        // the others wait on its data, not on its report.
        if round == argument("stop-before-round", default: -1) { raise(SIGSTOP) }
        if gapMilliseconds > 0 { usleep(UInt32(gapMilliseconds * 1000)) }
        let rank = communicator.rank, size = communicator.worldSize, epoch = communicator.epoch
        let original = inputs(rank: rank, round: round)
        var values = original
        let start = monotonicMilliseconds()
        do {
            // The sum over the ranks that count: all of them, or those up to this one for a scan.
            let counted = scan ? rank + 1 : size
            if scan {
                values = try communicator.allScan(original, op: .sum, algorithm: .chain).inclusive
            } else {
                try communicator.allReduce(&values, op: .sum)
            }
            let rankSum = counted * (counted - 1) / 2
            let correct = values.indices.allSatisfy { values[$0] == Float(rankSum + counted * (round + $0 % 13)) }
            say("OK round=\(round) epoch=\(epoch) world=\(size) correct=\(correct) hash=\(hash(values))")
            round += 1
        } catch let error as ChorusError {
            // In place (all-reduce) the buffer must hold the input again; out of place (scan) the
            // input must be untouched.
            let restored = (scan ? original : values) == inputs(rank: rank, round: round)
            say("ABORT round=\(round) epoch=\(epoch) retryable=\(error.isRetryable) restored=\(restored) ms=\(monotonicMilliseconds() - start) error=\(error)")
            guard error.isRetryable else { exit(3) }
            // Re-forming can fail too (a ring that cannot connect): retry while the error says so.
            let reformStart = monotonicMilliseconds()
            while true {
                do {
                    try communicator.updateTopology()
                    break
                } catch let error as ChorusError where error.isRetryable {
                    say("REFORM-FAILED error=\(error)")
                }
            }
            say("TOPOLOGY epoch=\(communicator.epoch) world=\(communicator.worldSize) rank=\(communicator.rank) ms=\(monotonicMilliseconds() - reformStart)")
        }
    }
    try communicator.leave()
    say("DONE")
} catch {
    say("FATAL \(error)")
    exit(2)
}

/// The rounds, each one `withRetry` step: the helper re-forms the group and synchronizes the state
/// after a peer is lost; the step all-reduces and folds the result into the state.
func runWithRetry(_ communicator: Communicator) throws {
    let state = SharedState()
    let weights = try state.add("weights", values: [Float](repeating: 0, count: 16))
    for round in 0 ..< rounds {
        if gapMilliseconds > 0 { usleep(UInt32(gapMilliseconds * 1000)) }
        let (values, attempts, size, epoch) = try communicator.withRetry(synchronizing: state) { attempt in
            var values = inputs(rank: communicator.rank, round: round)
            try communicator.allReduce(&values, op: .sum)
            return (values, attempt, communicator.worldSize, communicator.epoch)
        }
        weights.withUnsafeMutableBufferPointer(as: Float.self) { w in
            for i in w.indices { w[i] = w[i] / 2 + values[i] }
        }
        state.revision += 1
        let rankSum = size * (size - 1) / 2
        let correct = values.indices.allSatisfy { values[$0] == Float(rankSum + size * (round + $0 % 13)) }
        say("OK round=\(round) epoch=\(epoch) world=\(size) correct=\(correct) hash=\(hash(values)) attempts=\(attempts) state=\(state.contentHash)")
    }
}
