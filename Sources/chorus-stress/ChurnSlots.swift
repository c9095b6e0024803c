/// Which of the driver's peer processes (slots) a churn event may act on: stopped ones are not, nor
/// are ones resumed after a stop long enough to have been evicted (each is about to exit: killing
/// it, or counting it toward the minimum, left groups of one waiting for a join).
///
/// A resumed slot still running `resumedBound` after its resume was stopped before the master
/// admitted it, and joined once resumed: it counts again. Counted out until it exited, such a slot
/// left a run's schedule stuck at the minimum, with no event for the rest of the run.
struct ChurnSlots {
    /// Slot -> when it was stopped (µs).
    private(set) var stopped: [Int: UInt64] = [:]
    /// Slot -> when it was resumed (µs).
    private var resumed: [Int: UInt64] = [:]
    let stopFor: UInt64
    let resumedBound: UInt64

    /// `peerTimeoutMs`: a stop lasts twice that (the master has evicted the member by then).
    init(peerTimeoutMs: Int) {
        stopFor = UInt64(peerTimeoutMs) * 2000
        resumedBound = UInt64(max(peerTimeoutMs * 4, 5000)) * 1000
    }

    mutating func stop(_ slot: Int, at now: UInt64) { stopped[slot] = now }

    /// The stopped slots due to resume at `now`, marked resumed.
    mutating func resumeDue(at now: UInt64) -> [Int] {
        let due = stopped.filter { now - $0.value > stopFor }.keys.sorted()
        for slot in due {
            stopped[slot] = nil
            resumed[slot] = now
        }
        return due
    }

    /// A slot whose process exited.
    mutating func exited(_ slot: Int) {
        stopped[slot] = nil
        resumed[slot] = nil
    }

    /// The slots of `alive` an event may act on at `now`.
    func running(_ alive: some Sequence<Int>, at now: UInt64) -> [Int] {
        alive.filter { slot in stopped[slot] == nil && resumed[slot].map { now - $0 >= resumedBound } ?? true }.sorted()
    }
}
