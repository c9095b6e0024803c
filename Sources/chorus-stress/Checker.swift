#if canImport(Glibc)
import Glibc
#endif

/// Reads every peer's log and the driver's, and judges the run:
/// - a collective is (epoch, op id); its outcome at a peer is `ok` or `abort:REASON` (a verdict);
///   `local:` lines (refused before any operation) and `fatal:` lines (an evicted or orphaned peer,
///   which is not a survivor) are counted but take no part in the verdict checks;
/// - split outcome: the peers that logged one collective disagree (ok vs abort, or two reasons), or
///   name different participants;
/// - wrong result: an `ok` whose output hash differs from the sum over its participants' inputs;
/// - hang: an operation that took longer than the bound, or a peer that did not finish when told;
/// - false eviction: a peer evicted (it logs `event kind=evicted`) that the driver never stopped;
/// - recovery: from each kill, stop (or master restart) to the end of the first successful all-reduce that started after
///   it, split into phases (`Recovery`); the same per kind of event (kill, stop, leave, join) in
///   `recoveryByKind`, where a kill, stop or leave of a peer the master had not admitted yet is a kind
///   of its own ("kill before admission"): the group has nothing to recover from, and the time
///   measured after it is whatever else was going on.
struct Checker {
    let directory: String
    let count: Int
    let hangBoundMs: Int

    /// An operation longer than this is a hang: four peer timeouts (detection and re-forming) plus 5 s.
    static func hangBound(peerTimeoutMs: Int) -> Int { peerTimeoutMs * 4 + 5000 }

    struct Operation {
        let peer: UInt64, epoch: UInt64, op: UInt64
        let participants: String
        let outcome: String
        let kind: String
        let hash: UInt64
        /// The shared state's hash after the operation.
        let state: UInt64
        let start: UInt64, end: UInt64

        var isVerdict: Bool { outcome == "ok" || outcome.hasPrefix("abort:") }
        var collective: Collective { Collective(epoch: epoch, op: op) }
    }

    /// A collective: the same (epoch, op id) at every peer.
    struct Collective: Hashable, Comparable, CustomStringConvertible {
        let epoch: UInt64, op: UInt64
        static func < (a: Self, b: Self) -> Bool { (a.epoch, a.op) < (b.epoch, b.op) }
        var description: String { "\(epoch)/\(op)" }
    }

    /// One log line: its first word (the type) and its `key=value` words, found by a scan (a line
    /// has a dozen at most; a dictionary per line made a long soak's check take gigabytes).
    struct LogLine {
        private let words: [Substring]
        var type: Substring { words.first ?? "" }

        init(_ text: String) { words = text.split(separator: " ") }

        subscript(key: String) -> Substring? {
            for word in words.dropFirst() where word.hasPrefix(key) {
                let rest = word.dropFirst(key.count)
                if rest.first == "=" { return rest.dropFirst() }
            }
            return nil
        }

        func number(_ key: String) -> UInt64? { self[key].flatMap { UInt64($0) } }
    }

    /// Calls `body` with each line of `file`, read as it goes (a long soak logs gigabytes).
    private func eachLine(of file: String, _ body: (LogLine) -> Void) {
        guard let handle = fopen(directory + "/" + file, "r") else { return }
        defer { fclose(handle) }
        var buffer = [CChar](repeating: 0, count: 4096)
        while fgets(&buffer, 4096, handle) != nil {
            body(LogLine(String(decoding: buffer.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)))
        }
    }

    private func lines(of file: String) -> [LogLine] {
        var result: [LogLine] = []
        eachLine(of: file) { result.append($0) }
        return result
    }

    private func peerLogs() -> [String] {
        guard let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name.hasPrefix("peer-") && name.hasSuffix(".log") { names.append(name) }
        }
        return names
    }

    /// What the peers' logs say, in one pass: their operations, and from their `event` lines when
    /// rings re-formed (ascending, in microseconds), which peers (by the driver's slot) were
    /// evicted, and when each was admitted.
    struct PeerLogs {
        var operations: [Operation] = []
        var reformed: [UInt64] = [], evictedSlots: Set<String> = [], admitted: [String: UInt64] = [:]
    }

    func readPeerLogs() -> PeerLogs {
        var logs = PeerLogs()
        for log in peerLogs() {
            let slot = String(log.dropFirst("peer-".count).dropLast(".log".count))
            eachLine(of: log) { line in
                switch line.type {
                case "op":
                    guard let peer = line.number("peer"), let epoch = line.number("epoch"), let op = line.number("op"),
                          let start = line.number("start"), let end = line.number("end") else { return }
                    logs.operations.append(Operation(
                        peer: peer, epoch: epoch, op: op, participants: String(line["participants"] ?? ""),
                        outcome: String(line["outcome"] ?? ""), kind: String(line["kind"] ?? "allreduce"),
                        hash: line.number("hash") ?? 0, state: line.number("state") ?? 0, start: start, end: end))
                case "event":
                    if line["kind"] == "reformed", let t = line.number("t") { logs.reformed.append(t) }
                    if line["kind"] == "evicted" { logs.evictedSlots.insert(slot) }
                    if line["kind"] == "admitted", logs.admitted[slot] == nil, let t = line.number("t") { logs.admitted[slot] = t }
                default:
                    break
                }
            }
        }
        logs.reformed.sort()
        return logs
    }

    /// Collectives with at least one verdict logged.
    func decidedOperations() -> Int {
        Set(readPeerLogs().operations.lazy.filter(\.isVerdict).map(\.collective)).count
    }

    func report(stragglers: Int, resourcesBefore: Resources, resourcesAfter: Resources) -> StressReport {
        var peerLogs = readPeerLogs()
        // Each collective's lines side by side: sorted in place by collective (grouping by key, and
        // copies of millions of lines, took gigabytes).
        peerLogs.operations.sort { $0.collective < $1.collective }
        let all = peerLogs.operations
        var split = 0, wrong = 0, succeeded = 0, aborted = 0, stateDivergences = 0, syncs = 0
        var examples: [String] = []
        var first = all.startIndex
        while first < all.endIndex {
            let key = all[first].collective
            var past = first + 1
            while past < all.endIndex, all[past].collective == key { past += 1 }
            let group = all[first ..< past].filter(\.isVerdict)
            first = past
            if group.isEmpty { continue }
            let outcomes = Set(group.map(\.outcome)), participants = Set(group.map(\.participants))
            if outcomes.count > 1 || participants.count > 1 {
                split += 1
                if examples.count < 5 { examples.append("split \(key): \(outcomes.sorted()) \(participants.sorted())") }
                continue
            }
            if outcomes.first == "ok" {
                succeeded += 1
                if Set(group.map(\.state)).count > 1 {
                    stateDivergences += 1
                    if examples.count < 5 { examples.append("shared state differs after \(key): \(Set(group.map(\.state)).sorted())") }
                }
                if group[0].kind == "sync" {
                    syncs += 1
                    continue
                }
                let expected = expectedHash(epoch: key.epoch, op: key.op, participants: group[0].participants)
                let bad = group.filter { $0.hash != expected }.count
                if bad > 0 {
                    wrong += 1
                    if examples.count < 5 { examples.append("wrong \(key) at \(bad) peer(s)") }
                }
            } else {
                aborted += 1
            }
        }
        let slow = all.filter { ($0.end - $0.start) / 1000 > UInt64(hangBoundMs) }
        for op in slow.prefix(3) { examples.append("hang \(op.epoch)/\(op.op) at peer \(op.peer): \((op.end - op.start) / 1000) ms") }
        let driver = lines(of: "driver.log")
        func count(_ kind: String) -> Int { driver.filter { $0["kind"] == Substring(kind) }.count }
        let recover = RecoveryClock(operations: all, reformed: peerLogs.reformed)
        // A peer evicted that the driver never stopped was alive and merely slow: a false alarm.
        let falseEvictions = peerLogs.evictedSlots.subtracting(driver.filter { $0["kind"] == "stop" }.compactMap { $0["slot"].map(String.init) })
        for slot in falseEvictions.sorted().prefix(3) { examples.append("false eviction: peer-\(slot).log was evicted but never stopped") }
        func recoveries(_ kind: String, of kinds: Set<String>, where include: (_ admitted: Bool) -> Bool = { _ in true }) -> RecoveryTimes {
            let times = driver.filter { line in
                guard let kind = line["kind"], kinds.contains(String(kind)), let t = line.number("t") else { return false }
                return include(line["slot"].flatMap { peerLogs.admitted[String($0)] }.map { $0 < t } ?? false)
            }.compactMap { $0.number("t") }
            return RecoveryTimes(kind: kind, recoveries: times.compactMap(recover.recovery(after:)), events: times.count)
        }
        let faults = recoveries("kill/stop", of: ["kill", "stop"])
        let ofMembers = ["kill", "stop", "leave"].map { recoveries($0, of: [$0], where: { $0 }) }
        let beforeAdmission = ["kill", "stop", "leave"].map { recoveries("\($0) before admission", of: [$0], where: { !$0 }) }
        let masterRestarts = recoveries("master restart", of: ["master"])
        let byKind = ofMembers + [recoveries("join", of: ["join"])] + beforeAdmission.filter { $0.events > 0 }
            + (masterRestarts.events > 0 ? [masterRestarts] : [])
        return StressReport(
            opsAttempted: Set(all.lazy.filter { !$0.outcome.hasPrefix("local:") }.map(\.collective)).count,
            opsSucceeded: succeeded, opsAborted: aborted,
            peerOperations: all.count, localRefusals: all.filter { $0.outcome.hasPrefix("local:") }.count,
            fatalAtEvictedPeers: all.filter { $0.outcome.hasPrefix("fatal:") }.count,
            kills: count("kill"), stops: count("stop"), joins: count("join"), leaves: count("leave"), masterRestarts: count("master"),
            splitOutcomes: split, wrongResults: wrong, stateDivergences: stateDivergences, syncs: syncs,
            hangs: slow.count + stragglers, falseEvictions: falseEvictions.count,
            recovery: faults, recoveryByKind: byKind,
            before: resourcesBefore, after: resourcesAfter, examples: examples)
    }

    private func expectedHash(epoch: UInt64, op: UInt64, participants: String) -> UInt64 {
        var sum = [Float](repeating: 0, count: count)
        for peer in participants.split(separator: ",").compactMap({ UInt64($0) }) {
            let input = stressInput(peer: peer, epoch: epoch, op: op, count: count)
            for i in 0 ..< count { sum[i] += input[i] }
        }
        return stressHash(sum)
    }
}

/// One recovery, in milliseconds, from an event to the end of the first successful all-reduce that
/// started after it, cut where the survivors' logs show the next step (each phase starts where the one
/// before ends, so they add up to the whole):
/// - verdict: until the first operation that ended without success (the fault noticed, by the socket
///   closing or a peer timeout, and the master's verdict); 0 when no operation was under way;
/// - reform: until the first ring re-formed after that (`updateTopology` returned somewhere);
/// - sync: until the first successful shared-state synchronization of the new epoch ended;
/// - collective: until the all-reduce ended.
struct Recovery {
    static let phases = ["verdict", "reform", "sync", "collective"]
    let verdict, reform, sync, collective: Double
    var total: Double { verdict + reform + sync + collective }

    func phase(_ name: String) -> Double {
        switch name {
        case "verdict": verdict
        case "reform": reform
        case "sync": sync
        default: collective
        }
    }
}

/// Finds each recovery's phases in the logs.
struct RecoveryClock {
    /// Successful all-reduces and synchronizations, by their end.
    private let allReduces: [Span], syncs: [Span]
    private let unsuccessfulEnds: [UInt64], reformed: [UInt64]

    struct Span { let start, end: UInt64 }

    init(operations: [Checker.Operation], reformed: [UInt64]) {
        func spans(_ kind: String) -> [Span] {
            operations.lazy.filter { $0.outcome == "ok" && $0.kind == kind }.map { Span(start: $0.start, end: $0.end) }.sorted { $0.end < $1.end }
        }
        allReduces = spans("allreduce")
        syncs = spans("sync")
        unsuccessfulEnds = operations.lazy.filter { $0.outcome.hasPrefix("abort:") || $0.outcome.hasPrefix("local:") }.map(\.end).sorted()
        self.reformed = reformed
    }

    /// The recovery from an event at `t` (µs), or nil when no all-reduce succeeded after it.
    func recovery(after t: UInt64) -> Recovery? {
        // Whatever started at `t` or later ended then or later: search from the first such end.
        var low = 0, high = allReduces.count
        while low < high {
            let middle = (low + high) / 2
            if allReduces[middle].end < t { low = middle + 1 } else { high = middle }
        }
        guard let done = allReduces[low...].first(where: { $0.start >= t })?.end else { return nil }
        let verdict = unsuccessfulEnds.first { $0 >= t && $0 <= done } ?? t
        let reform = reformed.first { $0 >= verdict && $0 <= done } ?? verdict
        let synced = syncs.first { $0.start >= reform && $0.end <= done }?.end ?? reform
        func ms(_ from: UInt64, _ to: UInt64) -> Double { Double(to - from) / 1000 }
        return Recovery(verdict: ms(t, verdict), reform: ms(verdict, reform), sync: ms(reform, synced), collective: ms(synced, done))
    }
}

/// p50, p99 and max of some durations (ms).
struct Percentiles {
    let sorted: [Double]

    init(_ values: [Double]) { sorted = values.sorted() }

    func percentile(_ p: Double) -> Double {
        sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)]
    }
    var p50: Double { percentile(0.5) }
    var p99: Double { percentile(0.99) }
    var max: Double { sorted.last ?? 0 }
    /// Means add up where percentiles do not: the phases' means sum to the whole's.
    var mean: Double { sorted.isEmpty ? 0 : sorted.reduce(0, +) / Double(sorted.count) }

    var summary: String {
        let ms = { (v: Double) in String(Int(v.rounded())) + " ms" }
        return "p50 \(ms(p50)), p99 \(ms(p99)), max \(ms(max)), mean \(ms(mean))"
    }
}

/// The recoveries after the events of one kind.
struct RecoveryTimes {
    let kind: String
    let recoveries: [Recovery]
    /// Events of the kind, recovered or not (the run may end before a success follows one).
    let events: Int

    var whole: Percentiles { Percentiles(recoveries.map(\.total)) }
    func phase(_ name: String) -> Percentiles { Percentiles(recoveries.map { $0.phase(name) }) }
    var p50: Double { whole.p50 }
    var p99: Double { whole.p99 }
    var max: Double { whole.max }

    var summary: String { whole.summary + " (\(recoveries.count) of \(events) events)" }
    /// `recovery_<kind>_ms_p50/_p99/_max/_mean`, `_events`, and each phase's `recovery_<kind>_<phase>_ms_p50/_p99/_mean`
    /// (spaces in the kind become underscores).
    var jsonFields: [(String, String)] {
        let kind = String(kind.map { $0 == " " ? "_" : $0 })
        var fields: [(String, String)] = [("recovery_\(kind)_ms_p50", "\(p50)"), ("recovery_\(kind)_ms_p99", "\(p99)"),
                                          ("recovery_\(kind)_ms_max", "\(max)"), ("recovery_\(kind)_ms_mean", "\(whole.mean)"),
                                          ("recovery_\(kind)_events", "\(events)")]
        for name in Recovery.phases {
            let p = phase(name)
            fields.append(("recovery_\(kind)_\(name)_ms_p50", "\(p.p50)"))
            fields.append(("recovery_\(kind)_\(name)_ms_p99", "\(p.p99)"))
            fields.append(("recovery_\(kind)_\(name)_ms_mean", "\(p.mean)"))
        }
        return fields
    }
    /// The phases' mean and p99 on one line (the means add up to the whole's mean; percentiles do not).
    var phaseSummary: String {
        Recovery.phases.map { name in
            let p = phase(name)
            return "\(name) \(Int(p.mean.rounded()))/\(Int(p.p99.rounded()))"
        }.joined(separator: ", ") + " ms (mean/p99)"
    }
}

struct StressReport {
    let opsAttempted, opsSucceeded, opsAborted, peerOperations, localRefusals, fatalAtEvictedPeers: Int
    let kills, stops, joins, leaves, masterRestarts: Int
    let splitOutcomes, wrongResults, stateDivergences, syncs, hangs: Int
    /// Peers evicted that were never stopped (alive, merely slow).
    let falseEvictions: Int
    /// After kills and stops together, and per kind of event.
    let recovery: RecoveryTimes
    let recoveryByKind: [RecoveryTimes]
    let before, after: Resources
    let examples: [String]

    var churnEvents: Int { kills + stops + joins + leaves + masterRestarts }
    /// A run that decided nothing proved nothing, so it does not pass either.
    var passed: Bool {
        splitOutcomes == 0 && wrongResults == 0 && stateDivergences == 0 && hangs == 0 && falseEvictions == 0 && opsSucceeded > 0
    }

    var table: String {
        func row(_ name: String, _ value: String) -> String { "  " + name + String(repeating: " ", count: max(1, 34 - name.count)) + value }
        return (["chorus-stress report (\(passed ? "PASS" : "FAIL"))",
                 row("collectives attempted", "\(opsAttempted)"),
                 row("  succeeded / aborted", "\(opsSucceeded) / \(opsAborted)"),
                 row("peer-side operations logged", "\(peerOperations) (\(localRefusals) refused locally, \(fatalAtEvictedPeers) at evicted peers)"),
                 row("churn events", "\(churnEvents): \(joins) joins, \(leaves) leaves, \(kills) kills, \(stops) stops, \(masterRestarts) master restarts"),
                 row("split outcomes", "\(splitOutcomes)"),
                 row("wrong results", "\(wrongResults)"),
                 row("shared-state syncs / divergences", "\(syncs) / \(stateDivergences)"),
                 row("hangs", "\(hangs)"),
                 row("false evictions", "\(falseEvictions)"),
                 row("recovery after kill/stop", recovery.summary)]
                + recoveryByKind.flatMap { [row("  after a \($0.kind)", $0.summary), row("", $0.phaseSummary)] }
                + [
                 row("master process before", before.description),
                 row("master process after", after.description)] + examples.map { "  ! " + $0 }).joined(separator: "\n")
    }

    func writeJSON(to path: String) throws {
        let fields: [(String, String)] = [
            ("passed", "\(passed)"), ("ops_attempted", "\(opsAttempted)"), ("ops_succeeded", "\(opsSucceeded)"),
            ("ops_aborted", "\(opsAborted)"), ("peer_operations", "\(peerOperations)"), ("churn_events", "\(churnEvents)"),
            ("kills", "\(kills)"), ("stops", "\(stops)"), ("joins", "\(joins)"), ("leaves", "\(leaves)"), ("master_restarts", "\(masterRestarts)"),
            ("split_outcomes", "\(splitOutcomes)"), ("wrong_results", "\(wrongResults)"), ("hangs", "\(hangs)"),
            ("false_evictions", "\(falseEvictions)"),
            ("state_syncs", "\(syncs)"), ("state_divergences", "\(stateDivergences)"),
            ("recovery_ms_p50", "\(recovery.p50)"), ("recovery_ms_p99", "\(recovery.p99)"), ("recovery_ms_max", "\(recovery.max)"),
        ] + recoveryByKind.flatMap(\.jsonFields) + [
            ("fds_before", "\(before.descriptors)"), ("fds_after", "\(after.descriptors)"),
            ("threads_before", "\(before.threads)"), ("threads_after", "\(after.threads)"),
            ("rss_kib_before", "\(before.residentKiB)"), ("rss_kib_after", "\(after.residentKiB)"),
        ]
        guard let file = fopen(path, "w") else { throw CheckerError("cannot write \(path)") }
        defer { fclose(file) }
        fputs("{" + fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}\n", file)
    }
}

struct CheckerError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
