import Chorus
import Foundation
import ChorusLauncher
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The executables people run, smoke-tested as they run them.
@Suite(.serialized) struct ExecutableSmokeTests {
    private func run(_ name: String, _ arguments: [String]) throws -> (Int32?, String) {
        let child = try ChildProcess(executable: ProcessFaultTests.binaries + "/" + name, arguments: arguments,
                                     captureOutput: true)
        let code = child.waitForExit(timeoutMilliseconds: 240_000)
        return (code, child.output(timeoutMilliseconds: 2_000))
    }

    @Test func benchChecksResultsAndPrintsATable() throws {
        let (code, output) = try run("chorus-bench", ["allreduce", "--local", "2", "-b", "4K", "-e", "256K", "-n", "3", "-w", "1", "--check"])
        #expect(code == 0, "\(output)")
        let rows = output.split(separator: "\n").filter { $0.hasSuffix(" 0") && $0.contains("f32") }
        #expect(rows.count == 7, "one correct row per size from 4K to 256K:\n\(output)")
    }

    @Test func benchExitsNonZeroOnAWrongResult() throws {
        let (code, output) = try run("chorus-bench", ["allreduce", "--local", "2", "-b", "4K", "-e", "4K", "-n", "2", "-w", "0",
                                                      "--check", "--inject-wrong-result"])
        #expect(code != 0 && code != nil, "\(output)")
    }

    /// A short churn run: a few dozen joins, leaves, kills and stops while peers all-reduce.
    /// A short churn run passes the checker with successful collectives; then faults written into
    /// copies of its logs (a split outcome, a wrong result, a diverged state, a hang) each fail it,
    /// so a pass means something.
    @Test func stressRunPassesAndItsCheckerCatchesInjectedFaults() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("chorus-stress-test-\(getpid())").path
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (code, output) = try run("chorus-stress", ["--peers", "4", "--duration", "40", "--seed", "11",
                                                       "--event-interval-ms", "400", "--log-dir", directory,
                                                       "--json", directory + "/report.json"])
        #expect(code == 0, "\(output)")
        let report = try Self.reportFields(directory + "/report.json")
        for zero in ["split_outcomes", "wrong_results", "hangs", "state_divergences", "false_evictions"] { #expect(report[zero] == "0", "\(report)") }
        #expect(report["passed"] == "true" && Int(report["ops_succeeded"] ?? "") ?? 0 > 100, "many successful collectives: \(report)")
        #expect(Int(report["churn_events"] ?? "") ?? 0 >= 24, "a few dozen churn events: \(report)")
        for kind in ["kill", "stop", "leave", "join"] {
            for phase in ["verdict", "reform", "sync", "collective"] {
                #expect(report["recovery_\(kind)_\(phase)_ms_p50"] != nil && report["recovery_\(kind)_\(phase)_ms_p99"] != nil, "\(kind) \(phase): \(report)")
            }
        }

        let injections: [(field: String, rewrite: (String) -> String?)] = [
            ("split_outcomes", { $0.contains("kind=allreduce outcome=ok") ? $0.replacingOccurrences(of: "outcome=ok", with: "outcome=abort:peerLost(99)") : nil }),
            ("wrong_results", { line in
                guard line.contains("kind=allreduce outcome=ok"), let range = line.range(of: #"hash=\d+"#, options: .regularExpression) else { return nil }
                return line.replacingCharacters(in: range, with: "hash=12345")
            }),
            ("state_divergences", { line in
                guard line.contains("kind=allreduce outcome=ok"), let range = line.range(of: #"state=\d+"#, options: .regularExpression) else { return nil }
                return line.replacingCharacters(in: range, with: "state=777")
            }),
            ("hangs", { line in
                guard line.contains("kind=allreduce outcome=ok"), let start = line.range(of: #"start=\d+"#, options: .regularExpression),
                      let end = line.range(of: #"end=\d+"#, options: .regularExpression),
                      let begun = UInt64(line[start].dropFirst(6)) else { return nil }
                return line.replacingCharacters(in: end, with: "end=\(begun + 600_000_000)")
            }),
        ]
        for (field, rewrite) in injections {
            let copy = directory + "-" + field
            try? FileManager.default.removeItem(atPath: copy)
            try FileManager.default.copyItem(atPath: directory, toPath: copy)
            defer { try? FileManager.default.removeItem(atPath: copy) }
            // Keep the start of every peer's log (checking a whole run again takes long in a debug
            // build), then rewrite the 20th matching line of one: shared by the other members.
            for name in try FileManager.default.contentsOfDirectory(atPath: copy) where name.hasPrefix("peer-") {
                let path = copy + "/" + name
                let head = try String(contentsOfFile: path, encoding: .utf8).components(separatedBy: "\n").prefix(100)
                try head.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
            }
            let log = copy + "/peer-0.log"
            var lines = try String(contentsOfFile: log, encoding: .utf8).components(separatedBy: "\n")
            let candidates = lines.indices.filter { rewrite(lines[$0]) != nil }
            let target = try #require(candidates.dropFirst(min(20, candidates.count - 1)).first, "no line to rewrite for \(field)")
            lines[target] = rewrite(lines[target])!
            try lines.joined(separator: "\n").write(toFile: log, atomically: true, encoding: .utf8)
            let (status, checked) = try run("chorus-stress", ["check", "--log-dir", copy, "--json", copy + "/report.json"])
            let injected = try Self.reportFields(copy + "/report.json")
            #expect(status == 1 && injected["passed"] == "false", "\(field) injected, the checker passed:\n\(checked)")
            #expect(Int(injected[field] ?? "") ?? 0 >= 1, "\(field) injected: \(injected)")
        }

        // A peer the driver never stopped says it was evicted: a slow peer taken for a hung one.
        let stoppedSlots = Set(try String(contentsOfFile: directory + "/driver.log", encoding: .utf8).components(separatedBy: "\n")
            .filter { $0.contains("kind=stop ") }.compactMap { $0.split(separator: " ").first { $0.hasPrefix("slot=") }?.dropFirst(5) }.map(String.init))
        let slot = try #require((0 ..< 100).map(String.init).first { !stoppedSlots.contains($0) && FileManager.default.fileExists(atPath: directory + "/peer-\($0).log") })
        let copy = directory + "-false-eviction"
        try? FileManager.default.removeItem(atPath: copy)
        try FileManager.default.createDirectory(atPath: copy, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: copy) }
        try FileManager.default.copyItem(atPath: directory + "/driver.log", toPath: copy + "/driver.log")
        try FileManager.default.copyItem(atPath: directory + "/peer-\(slot).log", toPath: copy + "/peer-\(slot).log")
        let log = try String(contentsOfFile: copy + "/peer-\(slot).log", encoding: .utf8)
        try (log + "event kind=evicted peer=99 t=1\n").write(toFile: copy + "/peer-\(slot).log", atomically: true, encoding: .utf8)
        let (status, checked) = try run("chorus-stress", ["check", "--log-dir", copy, "--json", copy + "/report.json"])
        let injected = try Self.reportFields(copy + "/report.json")
        #expect(status == 1 && injected["false_evictions"] == "1", "a false eviction injected, the checker said:\n\(checked)")
    }

    /// The checker's phases of a recovery, on logs written by hand: a kill at 1.000 s, the first
    /// abort ending at 1.012 s, the ring re-formed at 1.040 s, the synchronization done at 1.070 s,
    /// the first all-reduce at 1.080 s. Each phase must come out exact, and they add up to the whole.
    /// A kill at the same moment of a peer never admitted (slot 7) is a kind of its own.
    @Test func theCheckerSplitsARecoveryIntoPhasesThatAddUp() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("chorus-phases-\(getpid())").path
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "event kind=join slot=0 t=100\nevent kind=kill slot=2 t=1000000\nevent kind=kill slot=7 t=1000000\n".write(toFile: directory + "/driver.log", atomically: true, encoding: .utf8)
        for (peer, late) in [(1, 0), (2, 3000)] {
            let op = { (epoch: Int, id: Int, kind: String, outcome: String, start: Int, end: Int) in
                "op peer=\(peer) epoch=\(epoch) op=\(id) participants=1,2,3 kind=\(kind) outcome=\(outcome) hash=0 state=5 start=\(start) end=\(end + late)"
            }
            let lines = ["event kind=admitted peer=\(peer) t=200",
                         op(1, 5, "allreduce", "ok", 500_000, 510_000),
                         op(1, 6, "allreduce", "abort:peer_3_was_lost", 990_000, 1_012_000),
                         "event kind=reformed peer=\(peer) epoch=2 t=\(1_040_000 + late)",
                         op(2, 1, "sync", "ok", 1_041_000 + late, 1_070_000),
                         op(2, 2, "allreduce", "ok", 1_071_000 + late, 1_080_000)]
            try (lines.joined(separator: "\n") + "\n").write(toFile: directory + "/peer-\(peer).log", atomically: true, encoding: .utf8)
        }
        _ = try run("chorus-stress", ["check", "--log-dir", directory, "--json", directory + "/report.json"])
        let report = try Self.reportFields(directory + "/report.json")
        let expected = ["verdict": 12.0, "reform": 28.0, "sync": 30.0, "collective": 10.0]
        for (phase, ms) in expected {
            #expect(Double(report["recovery_kill_\(phase)_ms_p50"] ?? "") == ms, "\(phase): \(report)")
        }
        #expect(Double(report["recovery_kill_ms_p50"] ?? "") == expected.values.reduce(0, +), "\(report)")
        #expect(Double(report["recovery_kill_verdict_ms_mean"] ?? "") == 12.0 && Double(report["recovery_kill_ms_mean"] ?? "") == 80.0, "\(report)")
        #expect(report["recovery_kill_events"] == "1" && report["recovery_join_events"] == "1"
                && report["recovery_kill_before_admission_events"] == "1", "\(report)")
    }

    /// The flat JSON object chorus-stress writes, as strings.
    static func reportFields(_ path: String) throws -> [String: String] {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        var fields: [String: String] = [:]
        for pair in text.trimmingCharacters(in: CharacterSet(charactersIn: "{}\n")).split(separator: ",") {
            let parts = pair.split(separator: ":", maxSplits: 1)
            if parts.count == 2 { fields[parts[0].trimmingCharacters(in: CharacterSet(charactersIn: "\""))] = String(parts[1]) }
        }
        return fields
    }

    @Test func sequenceParallelLinearAttentionMatchesOneProcess() throws {
        let (code, output) = try run("chorus-linear-attention", ["--peers", "4", "--tokens", "32"])
        #expect(code == 0, "\(output)")
        #expect(output.contains("all 4 shards match"), "\(output)")
    }

    @Test func demoRunsKillsAPeerAndRecovers() throws {
        let (code, output) = try run("chorus-demo", ["--peers", "3", "--rounds", "4", "--count", "10000"])
        #expect(code == 0, "\(output)")
        #expect(output.contains("failed on every survivor") && output.contains("0 wrong"), "\(output)")
    }

    /// The training example: the loss falls, a joiner catches up, the world grows and shrinks, and
    /// every peer that finishes holds the same state.
    @Test func dilocoTrainsThroughAJoinAKillAndALeave() throws {
        let (code, output) = try run("chorus-diloco", ["--steps", "30", "--kill-at", "12", "--leave-at", "20"])
        #expect(code == 0, "\(output)")
        let steps = output.split(separator: "\n").filter { $0.hasPrefix("step ") }.map { $0.split(separator: " ") }
        let losses = steps.compactMap { Float($0[6]) }, worlds = Set(steps.map { String($0[3]) })
        #expect(steps.count == 30 && losses.count == 30, "\(output)")
        #expect((losses.last ?? 1) < (losses.first ?? 0) * 0.8, "the held-out loss falls: \(losses)")
        #expect(worlds.isSuperset(of: ["3", "4", "2"]), "the world grows to 4 and shrinks to 2: \(worlds)")
        #expect(output.contains("caught up to step"), "\(output)")
        let finals = output.split(separator: "\n").filter { $0.contains(": done at step 30, state ") }.map { $0.split(separator: " ").last! }
        #expect(finals.count == 2 && Set(finals).count == 1, "the two finishers hold the same state: \(finals)")
    }
}
