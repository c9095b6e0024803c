// --collective allreduce|broadcast|reducescatter|allgather|allscan [--form array|raw]
// [--mode blocking|async] [--place in|out]: rounds of one collective, each announced by
//   START round=K epoch=E
// so a test can kill a member inside the operation. After an abort the peer checks that its input
// is as it was: an in-place buffer restored, an out-of-place send buffer untouched. OK lines check
// the result against the exact expected values (inputs are small integers, every sum is exact).
import Chorus
import ChorusTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// An array an async call updates in place, readable after the call threw.
final class ArrayHolder: @unchecked Sendable {
    var values: [Float]
    init(_ values: [Float]) { self.values = values }
}

func runRestoreRounds(_ communicator: Communicator, collective: String) throws {
    let form = option("form") ?? "array", mode = option("mode") ?? "blocking", place = option("place") ?? "in"
    let async = mode == "async"
    var round = 0
    while round < rounds {
        let rank = communicator.rank, n = communicator.worldSize, epoch = communicator.epoch
        let sendCount = collective == "reducescatter" ? count * n : count
        let input = (0 ..< sendCount).map { Float(rank + round + $0 % 13) }
        let send = FloatBuffer(input)
        let receiveCount = collective == "allgather" ? count * n : count
        let receive = FloatBuffer(count: receiveCount)
        let array = ArrayHolder(input)
        // What a successful round must produce, element by element.
        let expected: (Int) -> Float = { i in
            switch collective {
            case "broadcast": Float(round + i % 13)
            case "reducescatter": Float(n * (n - 1) / 2 + n * (round + (rank * count + i) % 13))
            case "allgather": Float(i / count + round + (i % count) % 13)
            case "allscan": Float(rank * (rank + 1) / 2 + (rank + 1) * (round + i % 13))
            default: Float(n * (n - 1) / 2 + n * (round + i % 13))
            }
        }
        say("START round=\(round) epoch=\(epoch)")
        do {
            let output: [Float]
            switch (collective, form, place) {
            case ("allreduce", "array", _):
                if async { try blockingAwait { try await communicator.allReduce(&array.values) } }
                else { try communicator.allReduce(&array.values) }
                output = array.values
            case ("allreduce", _, "in"):
                if async { try blockingAwait { try await communicator.allReduce(send: UnsafeRawBufferPointer(send.raw), receive: send.raw, count: count, dataType: .float32) } }
                else { try communicator.allReduce(inPlace: send.raw, count: count, dataType: .float32) }
                output = send.values
            case ("allreduce", _, _):
                if async { try blockingAwait { try await communicator.allReduce(send: UnsafeRawBufferPointer(send.raw), receive: receive.raw, count: count, dataType: .float32) } }
                else { try communicator.allReduce(send: UnsafeRawBufferPointer(send.raw), receive: receive.raw, count: count, dataType: .float32) }
                output = receive.values
            case ("broadcast", "array", _):
                if async { try blockingAwait { try await communicator.broadcast(&array.values, root: 0) } }
                else { try communicator.broadcast(&array.values, root: 0) }
                output = array.values
            case ("broadcast", _, _):
                if async { try blockingAwait { try await communicator.broadcast(send.raw, root: 0) } }
                else { try communicator.broadcast(send.raw, root: 0) }
                output = send.values
            case ("reducescatter", _, _):
                if async { try blockingAwait { try await communicator.reduceScatter(send: UnsafeRawBufferPointer(send.raw), receive: receive.raw, count: count, dataType: .float32) } }
                else { try communicator.reduceScatter(send: UnsafeRawBufferPointer(send.raw), receive: receive.raw, count: count, dataType: .float32) }
                output = receive.values
            case ("allgather", _, _):
                if async { try blockingAwait { try await communicator.allGather(send: UnsafeRawBufferPointer(send.raw), receive: receive.raw, count: count, dataType: .float32) } }
                else { try communicator.allGather(send: UnsafeRawBufferPointer(send.raw), receive: receive.raw, count: count, dataType: .float32) }
                output = receive.values
            default: // allscan, out of place
                try communicator.allScan(state: UnsafeRawBufferPointer(send.raw), count: count, dataType: .float32,
                                         exclusive: nil, inclusive: receive.raw, algorithm: .chain)
                output = receive.values
            }
            let correct = output.count == receiveCount && output.indices.allSatisfy { output[$0] == expected($0) }
            say("OK round=\(round) epoch=\(epoch) world=\(n) correct=\(correct) hash=\(hash(output))")
            round += 1
        } catch let error as ChorusError {
            // In place (array forms and in-place buffers), the buffer holds the input again; out of
            // place, the send buffer was never written. (An array passed out of place cannot change.)
            let restored = (form == "array" ? array.values : send.values) == input
            say("ABORT round=\(round) epoch=\(epoch) retryable=\(error.isRetryable) restored=\(restored) error=\(error)")
            guard error.isRetryable else { exit(3) }
            try communicator.updateTopology()
            say("TOPOLOGY epoch=\(communicator.epoch) world=\(communicator.worldSize) rank=\(communicator.rank)")
        }
    }
}
