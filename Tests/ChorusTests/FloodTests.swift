import Chorus
import ChorusLauncher
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A flood of connections that never identify themselves (silent, heartbeats only, a data-frame
/// header, a control frame trickled a byte at a time), from `chorus-stress flood`, against a
/// `chorus-master` process while two members run collectives: the members get every result right,
/// the master's memory and descriptors stay bounded, and its descriptors return to where they were
/// within the handshake deadline after the flood stops.
@Suite(.serialized) struct FloodTests {
    @Test func membersWorkAndTheMasterStaysBoundedDuringAFlood() async throws {
        let environment = ProcessFaultTests.environment.merging(["CHORUS_HANDSHAKE_TIMEOUT_MS": "1000"]) { $1 }
        let master = try ChildProcess(executable: ProcessFaultTests.binaries + "/chorus-master",
                                      arguments: ["--port", "0", "--log-level", "error"], environment: environment, captureOutput: true)
        defer { master.signal(SIGKILL) }
        let endpoint = try #require(ProcessFaultTests.endpoint(of: master))
        let (c0, c1) = try await ProtocolEdgeTests.formedPair(endpointMaster: endpoint)

        let flood = try ChildProcess(executable: ProcessFaultTests.binaries + "/chorus-stress",
                                     arguments: ["flood", "--target", endpoint, "--pid", "\(master.pid)", "--connections", "1500",
                                                 "--seconds", "6", "--recover", "3"],
                                     environment: [:], captureOutput: true)
        defer { flood.signal(SIGKILL) }
        var rounds = 0
        while flood.waitForExit(timeoutMilliseconds: 0) == nil && rounds < 100_000 {
            try await AuthenticationTests.exchange(c0, c1, round: Float(rounds % 1000 + 1))
            rounds += 1
        }
        #expect(flood.waitForExit(timeoutMilliseconds: 30_000) == 0)
        let report = flood.output(timeoutMilliseconds: 2_000)
        print("flood report (\(rounds) all-reduces by the members meanwhile):\n\(report)")
        #expect(rounds > 10, "the members completed only \(rounds) all-reduces during the flood")

        // "LABEL: target M MiB resident, D descriptors", one line per sample.
        let samples: [(label: String, mib: Int, descriptors: Int)] = report.split(separator: "\n").compactMap { line in
            guard let colon = line.range(of: ": target ") else { return nil }
            let numbers = line[colon.upperBound...].split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
            guard numbers.count == 2 else { return nil }
            return (String(line[..<colon.lowerBound]), numbers[0], numbers[1])
        }
        let before = try #require(samples.first { $0.label == "before" })
        let during = samples.filter { $0.label.hasPrefix("t=") && !$0.label.hasPrefix("t=+") }
        let after = samples.filter { $0.label.hasPrefix("t=+") }
        #expect(!during.isEmpty && !after.isEmpty, "\(report)")
        #expect(report.contains("closed by the target") && !report.contains(" 0 attacking connections were closed"), "\(report)")
        for sample in during {
            #expect(sample.mib < 64, "master memory during the flood: \(sample)")
            #expect(sample.descriptors <= before.descriptors + Configuration().maxUnidentifiedConnections + 8,
                    "master descriptors during the flood: \(sample)")
        }
        // Within the 1 s handshake deadline (and slack), back to the baseline.
        #expect(after.last.map { $0.descriptors <= before.descriptors } == true, "after the flood: \(after)")
        try await AuthenticationTests.exchange(c0, c1, round: 7)
    }
}
