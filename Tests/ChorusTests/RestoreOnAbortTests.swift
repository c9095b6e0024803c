import Chorus
import ChorusLauncher
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Inputs are restored on abort, for every collective, in place and out of place, arrays and raw
/// buffers, blocking and async: three peer processes run rounds of one collective and one of them is
/// SIGKILLed at several points of a round (as it starts, and some milliseconds into it). The
/// survivors must each see one retryable abort with their input as it was, then finish correctly.
@Suite(.serialized) struct RestoreOnAbortTests {
    struct Case: Sendable, CustomTestStringConvertible {
        let collective: String, form: String, mode: String, place: String
        let killAfterMs: UInt32
        var testDescription: String { "\(collective) \(form) \(place)-place \(mode), kill \(killAfterMs) ms in" }
        var arguments: [String] {
            ["--collective", collective, "--form", form, "--mode", mode, "--place", place]
        }
    }

    static let cases: [Case] = [
        Case(collective: "allreduce", form: "array", mode: "blocking", place: "in", killAfterMs: 0),
        Case(collective: "allreduce", form: "array", mode: "async", place: "in", killAfterMs: 15),
        Case(collective: "allreduce", form: "raw", mode: "blocking", place: "in", killAfterMs: 40),
        Case(collective: "allreduce", form: "raw", mode: "async", place: "out", killAfterMs: 0),
        Case(collective: "broadcast", form: "array", mode: "blocking", place: "in", killAfterMs: 15),
        Case(collective: "broadcast", form: "raw", mode: "async", place: "in", killAfterMs: 0),
        Case(collective: "reducescatter", form: "raw", mode: "blocking", place: "out", killAfterMs: 15),
        Case(collective: "allgather", form: "raw", mode: "async", place: "out", killAfterMs: 0),
        Case(collective: "allscan", form: "raw", mode: "blocking", place: "out", killAfterMs: 15),
    ]

    @Test(arguments: cases)
    func aKillInsideTheOperationLeavesEveryInputAsItWas(_ testCase: Case) throws {
        let master = try Master(host: "127.0.0.1", port: 0)
        defer { master.shutdown() }
        let peers = try (0 ..< 3).map { _ in
            try ChildProcess(executable: ProcessFaultTests.binaries + "/chorus-test-peer",
                             arguments: ["--master", master.endpoint, "--world", "3", "--count", "\(1 << 21)", "--rounds", "4"]
                                 + testCase.arguments,
                             environment: ProcessFaultTests.environment, captureOutput: true)
        }
        // The victim announces round 1 just before it calls the collective.
        let deadline = monotonicMilliseconds() + 120_000
        while !peers[2].outputSoFar(waitMilliseconds: 1).contains("START round=1"), monotonicMilliseconds() < deadline {}
        usleep(testCase.killAfterMs * 1000)
        peers[2].signal(SIGKILL)
        #expect(peers[2].waitForExit(timeoutMilliseconds: 10_000) == 128 + SIGKILL)
        let sameOutputs = ["allreduce", "broadcast"].contains(testCase.collective)
        ProcessFaultTests.checkRecovery(survivors: Array(peers[0 ..< 2]), expectedWorld: 2, sameOutputs: sameOutputs)
    }
}
