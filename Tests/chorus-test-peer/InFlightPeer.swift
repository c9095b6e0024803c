// --in-flight B: rounds of B in-place all-reduces in flight together (`startAllReduce`), each
// round announced by START as in RestorePeer.swift. When some abort (a member killed inside the
// burst), the peer prints one ABORT line for the round (restored: every failed buffer holds its
// input again and they all failed with one error), re-forms, and runs the failed ones again in the
// new world (with its new rank's input); the OK line checks every buffer against its exact sum in the world it ran in.
import Chorus
import ChorusLauncher
import ChorusTestSupport
#if canImport(Glibc)
import Glibc
#endif

func runInFlightRounds(_ communicator: Communicator, burst: Int) throws {
    for round in 0 ..< rounds {
        let epoch = communicator.epoch
        func input(_ op: Int) -> [Float] { (0 ..< count).map { Float(communicator.rank + round + op + $0 % 13) } }
        let buffers = (0 ..< burst).map { FloatBuffer(input($0)) }
        var worlds = [Int](repeating: 0, count: burst) // the world each buffer was reduced in
        var remaining = Array(0 ..< burst)
        say("START round=\(round) epoch=\(epoch)")
        while !remaining.isEmpty {
            let world = communicator.worldSize
            let start = monotonicMilliseconds()
            let pending = try remaining.map { op in
                try communicator.startAllReduce(inPlace: buffers[op].raw, count: count, dataType: .float32)
            }
            var failed: [(op: Int, error: ChorusError)] = []
            for (op, handle) in zip(remaining, pending) {
                do {
                    try handle.wait()
                    worlds[op] = world
                } catch let error as ChorusError {
                    failed.append((op, error))
                }
            }
            remaining = failed.map(\.op)
            guard let first = failed.first?.error else { break }
            let restored = failed.allSatisfy { buffers[$0.op].values == input($0.op) }
            let same = failed.allSatisfy { $0.error == first }
            say("ABORT round=\(round) epoch=\(communicator.epoch) retryable=\(first.isRetryable) restored=\(restored && same) ms=\(monotonicMilliseconds() - start) failed=\(remaining.map(String.init).joined(separator: ",")) error=\(first)")
            guard first.isRetryable else { exit(3) }
            try communicator.updateTopology()
            for op in remaining { _ = buffers[op].pointer.update(from: input(op)) } // this rank's input in the new ring
            say("TOPOLOGY epoch=\(communicator.epoch) world=\(communicator.worldSize) rank=\(communicator.rank)")
        }
        let correct = (0 ..< burst).allSatisfy { op in
            let n = worlds[op], values = buffers[op].values
            return values.indices.allSatisfy { values[$0] == Float(n * (n - 1) / 2 + n * (round + op + $0 % 13)) }
        }
        say("OK round=\(round) epoch=\(epoch) world=\(communicator.worldSize) correct=\(correct) hash=\(hash(buffers.flatMap(\.values)))")
    }
}
