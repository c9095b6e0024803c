import Chorus

/// Shared-state synchronization of one tensor of the message size: the last `--joiners` ranks hold
/// their own pattern (untimed refill before every iteration) and receive, receive-only, rank 0's
/// pattern from every other rank, striped. The time covers the whole call: hashing on every peer,
/// the election, the transfer and the receivers' re-hash. algbw = busbw = bytes a receiver gets per
/// second. With `--joiners 0` nobody is outdated and the row shows the one round trip.
enum SyncStateBench: BenchCase {
    static func counts(bytes: Int, elementSize: Int, world: Int) -> (input: Int, output: Int) {
        (bytes / elementSize, bytes / elementSize)
    }
    static func busFactor(world n: Int) -> Double { 1 }
    static func isReceiver(_ b: BenchBuffers) -> Bool { b.rank >= b.world - b.syncReceivers }
    static func input(_ b: BenchBuffers, index: Int) -> Double { b.pattern(rank: isReceiver(b) ? b.rank : 0, index: index) }
    static func expected(_ b: BenchBuffers, index: Int) -> Double { b.pattern(rank: 0, index: index) }
    static func overwritesInput(_ b: BenchBuffers) -> Bool { isReceiver(b) }
    static var refillIsRankDependent: Bool { true }
    static func run(_ c: Communicator, _ b: BenchBuffers) throws {
        let state = SharedState(revision: 1)
        try state.add("state", borrowing: b.outputBuffer, dataType: b.dataType.dataType)
        let result = try c.synchronize(state, strategy: isReceiver(b) ? .receiveOnly : .elect)
        guard result.wasOutdated == (isReceiver(b) && b.outputCount > 0) || b.world == 1 else {
            throw BenchError("rank \(b.rank): expected outdated=\(isReceiver(b)), got \(result)")
        }
    }
}
