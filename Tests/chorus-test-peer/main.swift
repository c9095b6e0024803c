// A peer process for the integration tests: joins a master, runs in-place all-reduces in a loop,
// and prints one line per event, which the tests parse:
//   READY rank=R world=N epoch=E
//   OK round=K epoch=E world=N correct=true|false hash=H
//   ABORT round=K epoch=E retryable=true|false restored=true|false error=TEXT
//   TOPOLOGY epoch=E world=N rank=R
//   DONE
// Inputs are small integers (rank + round + i % 13), so every expected sum is exact.
// With --scan the collective is an All-Scan (sum); "correct" checks the inclusive prefix.
// With --state-mib the peer synchronizes shared state first (StatePeer.swift).
import Chorus
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
    say("READY rank=\(communicator.rank) world=\(communicator.worldSize) epoch=\(communicator.epoch)")
    if CommandLine.arguments.contains("--state-mib") { try synchronizeState(communicator) }
    var round = 0
    while round < rounds {
        let rank = communicator.rank, size = communicator.worldSize, epoch = communicator.epoch
        let original = inputs(rank: rank, round: round)
        var values = original
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
            say("ABORT round=\(round) epoch=\(epoch) retryable=\(error.isRetryable) restored=\(values == original || scan) error=\(error)")
            guard error.isRetryable else { exit(3) }
            try communicator.updateTopology()
            say("TOPOLOGY epoch=\(communicator.epoch) world=\(communicator.worldSize) rank=\(communicator.rank)")
        }
    }
    try communicator.leave()
    say("DONE")
} catch {
    say("FATAL \(error)")
    exit(2)
}
