import Chorus
import ChorusLauncher
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The master is SIGKILLed (or stopped) and a new `chorus-master` is started on its address within a
/// second; the peers (real processes training with `withRetry`, which synchronizes a shared state
/// before every step) keep their sessions, the new master re-adopts the group from their reports,
/// and the run goes on: every round correct, the same output and the same shared state at every
/// member, nobody lost. The window is 3 s here (`ProcessFaultTests.environment`).
/// Part of the serialized `ProcessFaultTests`: like them, these tests block while their processes
/// run, so they must not run beside another suite that does.
extension ProcessFaultTests {
    /// Kills `master` and starts a new one on the port of `endpoint` after `downMilliseconds`.
    static func restart(_ master: ChildProcess, at endpoint: String, downMilliseconds: Int, running peers: [ChildProcess],
                        extraEnvironment: [String: String] = [:]) throws -> ChildProcess {
        #expect(peers.allSatisfy { !$0.outputSoFar(waitMilliseconds: 0).contains("DONE") }, "a peer finished before the master died")
        master.signal(SIGKILL)
        _ = master.waitForExit(timeoutMilliseconds: 10_000)
        usleep(UInt32(downMilliseconds * 1000))
        return try ProcessFaultTests.startMaster(port: UInt16(endpoint.split(separator: ":").last!)!, extraEnvironment: extraEnvironment).0
    }

    static func withRetryPeers(_ count: Int, master: String, rounds: Int, elements: Int, gapMilliseconds: Int,
                               extraEnvironment: [String: String] = [:]) throws -> [ChildProcess] {
        try ProcessFaultTests.startPeers(count, master: master, rounds: rounds, elements: elements,
                                         arguments: ["--with-retry", "--gap-ms", "\(gapMilliseconds)"], extraEnvironment: extraEnvironment)
    }

    /// Every peer ran every round to a correct result and exited 0; in each round all members agree
    /// on the output and the shared state. `firstAttempt`: no round needed a second attempt.
    static func checkTheRunWentOn(_ peers: [ChildProcess], rounds: Int, world: Int?, firstAttempt: Bool) {
        var byRound: [String: Set<String>] = [:]
        for peer in peers {
            let code = peer.waitForExit(timeoutMilliseconds: 120_000)
            let output = peer.output(timeoutMilliseconds: 2_000)
            #expect(code == 0, "exit \(String(describing: code)):\n\(output.suffix(1500))")
            let oks = ProcessFaultTests.lines(output).filter { $0.kind == "OK" }
            #expect(oks.count == rounds && oks.allSatisfy { $0.fields["correct"] == "true" && (world == nil || $0.fields["world"] == "\(world!)") },
                    "\(output.suffix(1500))")
            if firstAttempt { #expect(oks.allSatisfy { $0.fields["attempts"] == "1" }, "a round was retried:\n\(output.suffix(1500))") }
            for ok in oks { byRound[ok.fields["round"]!, default: []].insert("\(ok.fields["hash"]!) \(ok.fields["state"]!)") }
        }
        #expect(byRound.values.allSatisfy { $0.count == 1 }, "members disagree: \(byRound.filter { $0.value.count > 1 })")
    }

    /// Three peers train (`withRetry`, `rounds` rounds of `elements` floats, `gapMilliseconds` before
    /// each); the master is SIGKILLed once every peer has finished round `killAfter`, and a new one
    /// starts on its address 300 ms later. Every round must succeed at the first attempt everywhere.
    static func killTheMasterWhileTraining(rounds: Int, elements: Int, gapMilliseconds: Int, killAfter: Int,
                                           extraEnvironment: [String: String] = [:]) throws {
        let (master, endpoint) = try ProcessFaultTests.startMaster(extraEnvironment: extraEnvironment)
        let peers = try Self.withRetryPeers(3, master: endpoint, rounds: rounds, elements: elements, gapMilliseconds: gapMilliseconds,
                                            extraEnvironment: extraEnvironment)
        #expect(ProcessFaultTests.waitForRound(killAfter, peers))
        let restarted = try Self.restart(master, at: endpoint, downMilliseconds: 300, running: peers, extraEnvironment: extraEnvironment)
        defer { restarted.signal(SIGKILL) }
        Self.checkTheRunWentOn(peers, rounds: rounds, world: 3, firstAttempt: true)
    }

    /// Between steps (a 100 ms gap before each): nothing was in flight, so nothing is retried.
    @Test func aMasterKilledBetweenOperationsIsReplacedAndTheRunGoesOn() throws {
        try Self.killTheMasterWhileTraining(rounds: 30, elements: 1 << 12, gapMilliseconds: 100, killAfter: 3)
    }

    /// Back to back 1 MiB all-reduces and synchronizations: the master dies with an operation in
    /// flight, and the new one decides it from the reports the members send again (one outcome).
    @Test func aMasterKilledDuringOperationsIsReplacedWithOneOutcome() throws {
        try Self.killTheMasterWhileTraining(rounds: 60, elements: 1 << 18, gapMilliseconds: 0, killAfter: 5)
    }

    /// With a shared secret: the peers prove themselves to the new master (and it to them) before
    /// their rejoin counts.
    @Test func aMasterKilledWithASecretIsReplacedAfterTheHandshake() throws {
        let secretFile = "/tmp/chorus-secret-\(getpid())-\(monotonicMicroseconds())"
        defer { unlink(secretFile) }
        let file = fopen(secretFile, "w")
        fputs("restart-test-secret-0123456789abcdef\n", file)
        fclose(file)
        try Self.killTheMasterWhileTraining(rounds: 40, elements: 1 << 12, gapMilliseconds: 20, killAfter: 3,
                                            extraEnvironment: ["CHORUS_SECRET_FILE": secretFile])
    }

    /// A member stopped (SIGSTOP) just before the master dies: the others find its links silent and
    /// say so when they return, so the new master goes on without it well before its window (10 s
    /// here) would have run out; the survivors re-form and finish as a world of two.
    @Test func aMemberStoppedWhenTheMasterDiesIsNotWaitedForByTheNewOne() throws {
        let window = ["CHORUS_MASTER_WINDOW_MS": "10000"]
        let (master, endpoint) = try ProcessFaultTests.startMaster(extraEnvironment: window)
        let peers = try Self.withRetryPeers(3, master: endpoint, rounds: 300, elements: 1 << 12, gapMilliseconds: 5, extraEnvironment: window)
        defer { peers[2].signal(SIGKILL) }
        #expect(ProcessFaultTests.waitForRound(3, peers))
        peers[2].signal(SIGSTOP)
        let restarted = try Self.restart(master, at: endpoint, downMilliseconds: 300, running: peers, extraEnvironment: window)
        defer { restarted.signal(SIGKILL) }
        let survivors = Array(peers[0 ..< 2])
        let regrouped = ProcessFaultTests.millisecondsUntil("OK round=", in: survivors, within: 60_000, matching: "world=2")
        #expect(regrouped != nil && regrouped! < 10_000, "the survivors went on as a world of two after \(String(describing: regrouped)) ms")
        Self.checkTheRunWentOn(survivors, rounds: 300, world: nil, firstAttempt: false)
    }

    /// Two peers wait at the safe point for a third (`--world 3`); the master dies there. The new
    /// master re-adopts the member and the waiting peer, the third arrives, and the epoch forms.
    @Test func aMasterKilledDuringATopologyUpdateIsReplacedAndTheUpdateCompletes() throws {
        let (master, endpoint) = try ProcessFaultTests.startMaster()
        var peers = try (0 ..< 2).map { _ in
            try ChildProcess(executable: ProcessFaultTests.binaries + "/chorus-test-peer",
                             arguments: ["--master", endpoint, "--world", "3", "--count", "4096", "--rounds", "10", "--with-retry"],
                             environment: ProcessFaultTests.environment, captureOutput: true)
        }
        usleep(1_000_000) // both registered; the first waits at the safe point, the second for admission
        #expect(peers.allSatisfy { !$0.outputSoFar(waitMilliseconds: 0).contains("READY") })
        let restarted = try Self.restart(master, at: endpoint, downMilliseconds: 300, running: peers)
        defer { restarted.signal(SIGKILL) }
        usleep(500_000)
        peers.append(try ChildProcess(executable: ProcessFaultTests.binaries + "/chorus-test-peer",
                                      arguments: ["--master", endpoint, "--world", "3", "--count", "4096", "--rounds", "10", "--with-retry"],
                                      environment: ProcessFaultTests.environment, captureOutput: true))
        Self.checkTheRunWentOn(peers, rounds: 10, world: 3, firstAttempt: true)
    }

    /// Two sources serve 64 MiB to a joiner; the master dies while the joiner is 30% in. The
    /// transfer goes on peer to peer; the new master re-elects the same plan from the digests sent
    /// again and gives the synchronization its verdict: the joiner ends bit-exact, nobody lost.
    @Test func aMasterKilledDuringAStateTransferIsReplacedAndTheTransferCompletes() throws {
        let (master, endpoint) = try ProcessFaultTests.startMaster()
        let pauseFile = "/tmp/chorus-pause-\(getpid())-\(monotonicMicroseconds())"
        defer { unlink(pauseFile) }
        func start(_ role: String) throws -> ChildProcess {
            try ChildProcess(executable: ProcessFaultTests.binaries + "/chorus-test-peer",
                             arguments: ["--master", endpoint, "--world", "3", "--count", "4096", "--rounds", "3",
                                         "--state-mib", "64", "--role", role, "--pause-file", pauseFile],
                             environment: ProcessFaultTests.environment, captureOutput: true)
        }
        let peers = [try start("source"), try start("source"), try start("joiner")]
        let deadline = monotonicMilliseconds() + 120_000
        while !peers[2].outputSoFar(waitMilliseconds: 10).contains("PAUSED"), monotonicMilliseconds() < deadline {}
        #expect(peers[2].outputSoFar(waitMilliseconds: 0).contains("PAUSED"))
        let restarted = try Self.restart(master, at: endpoint, downMilliseconds: 300, running: peers)
        defer { restarted.signal(SIGKILL) }
        _ = open(pauseFile, O_CREAT | O_WRONLY, 0o600)
        var hashes: Set<String> = []
        for (index, peer) in peers.enumerated() {
            let code = peer.waitForExit(timeoutMilliseconds: 120_000)
            let output = peer.output(timeoutMilliseconds: 2_000)
            #expect(code == 0, "exit \(String(describing: code)):\n\(output.suffix(1500))")
            let lines = ProcessFaultTests.lines(output)
            let synced = lines.first { $0.kind == "SYNCED" }
            #expect(synced?.fields["outdated"] == "\(index == 2)" && synced?.fields["exact"] == "true"
                    && synced?.fields["lost"] == "0" && synced?.fields["revision"] == "9", "\(output.suffix(1500))")
            hashes.insert(synced?.fields["hash"] ?? "none")
            #expect(!lines.contains { $0.kind == "ABORT" }, "\(output.suffix(1500))")
            #expect(lines.filter { $0.kind == "OK" && $0.fields["world"] == "3" && $0.fields["correct"] == "true" }.count == 3, "\(output.suffix(1500))")
        }
        #expect(hashes.count == 1, "members' states differ: \(hashes)")
    }

    /// A master stopped (SIGSTOP) for 1.5 s, past the peers' hang suspicion: they close their
    /// connections and dial it again; resumed, it does not count those closes as losses (it knows it
    /// was stalled) and moves each session to its new connection.
    @Test func aMasterPausedWithinTheWindowResumesEverySession() throws {
        let (master, endpoint) = try ProcessFaultTests.startMaster()
        defer { master.signal(SIGKILL) }
        let peers = try Self.withRetryPeers(3, master: endpoint, rounds: 40, elements: 1 << 12, gapMilliseconds: 20)
        #expect(ProcessFaultTests.waitForRound(3, peers))
        #expect(peers.allSatisfy { !$0.outputSoFar(waitMilliseconds: 0).contains("DONE") }, "a peer finished before the master stopped")
        master.signal(SIGSTOP)
        usleep(1_500_000)
        master.signal(SIGCONT)
        Self.checkTheRunWentOn(peers, rounds: 40, world: 3, firstAttempt: true)
    }
}
