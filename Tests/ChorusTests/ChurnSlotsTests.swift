@testable import chorus_stress
import Testing

/// The churn driver's bookkeeping of which peer processes an event may act on.
struct ChurnSlotsTests {
    @Test func aSlotResumedAfterItsStopIsCountedOutUntilItExitsOrOutlivesTheBound() {
        var slots = ChurnSlots(peerTimeoutMs: 1500) // stops last 3 s; a resumed slot is out for 6 s
        let second: UInt64 = 1_000_000
        #expect(slots.running([0, 1, 2], at: 0) == [0, 1, 2])
        slots.stop(1, at: 0)
        slots.stop(2, at: 1 * second)
        #expect(slots.running([0, 1, 2], at: 2 * second) == [0])
        #expect(slots.resumeDue(at: 2 * second).isEmpty)
        #expect(slots.resumeDue(at: 3 * second + 1) == [1])
        #expect(slots.running([0, 1, 2], at: 3 * second + 1) == [0]) // 1 was evicted and is exiting; 2 is stopped
        #expect(slots.resumeDue(at: 4 * second + 1) == [2])
        slots.exited(1) // evicted as expected
        #expect(slots.running([0, 2], at: 5 * second) == [0])
        // Slot 2 was stopped before the master admitted it: it joined once resumed and keeps running.
        #expect(slots.running([0, 2], at: 10 * second) == [0])
        #expect(slots.running([0, 2], at: 10 * second + 2) == [0, 2])
        #expect(slots.stopped.isEmpty)
    }
}
