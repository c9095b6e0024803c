import Chorus
import ChorusLauncher
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Local launchers never wait for a group that can no longer form, and no process outlives them.
@Suite(.serialized) struct LauncherTests {
    /// Three peers must form a world of 3, but one cannot reach the master: the other two would sit in
    /// `updateTopology(minimumWorldSize: 3)` until the admission timeout. The group stops them at once.
    @Test func aFailedChildStopsItsSiblingsAndTheWaitReturnsAtOnce() throws {
        let master = try Master(host: "127.0.0.1", port: 0)
        defer { master.shutdown() }
        let group = LocalGroup()
        var children: [ChildProcess] = []
        for index in 0 ..< 3 {
            let address = index == 1 ? "127.0.0.1:1" : master.endpoint // port 1: nobody listens
            children.append(try group.start("peer \(index)", executable: ProcessFaultTests.binaries + "/chorus-test-peer",
                                            arguments: ["--master", address, "--world", "3", "--rounds", "1"],
                                            environment: ProcessFaultTests.environment))
        }
        let started = monotonicMilliseconds()
        do {
            try group.waitAll(timeoutMilliseconds: 300_000)
            Issue.record("the group finished although peer 1 could not join")
        } catch let failure as LocalGroup.Failure {
            #expect(failure.exitCode == 2, "\(failure)")
            #expect(failure.description.hasPrefix("peer 1 exited with 2; stopped "), "\(failure)")
            #expect(failure.description.contains("peer 0") && failure.description.contains("peer 2"), "\(failure)")
        }
        // Bound as correctness: far inside the 600 s admission timeout the siblings would otherwise wait.
        #expect(monotonicMilliseconds() - started < 60_000)
        for child in children {
            #expect(child.waitForExit(timeoutMilliseconds: 0) != nil, "pid \(child.pid) still running")
            #expect(kill(child.pid, 0) != 0, "pid \(child.pid) still exists")
        }
    }

    @Test func aGroupPastItsDeadlineIsStopped() throws {
        let group = LocalGroup()
        let child = try group.start("sleeper", executable: "/bin/sleep", arguments: ["600"])
        #expect(throws: LocalGroup.Failure.self) { try group.waitAll(timeoutMilliseconds: 300) }
        #expect(child.waitForExit(timeoutMilliseconds: 0) == 128 + SIGKILL)
    }

    /// A child bound to a CPU runs there from its start (the binding is inherited, not applied after
    /// the spawn), the launcher's own thread keeps the CPUs it had, and peers that do not fit one per
    /// CPU are left unbound.
    @Test func aChildBoundToACPURunsOnlyThereAndTheLauncherKeepsItsCPUs() throws {
        let allowed = CoreBinding.allowedCPUs()
        try #require(!allowed.isEmpty)
        let cpu = allowed.last!
        let child = try ChildProcess(executable: "/bin/sleep", arguments: ["30"], cpu: cpu)
        defer {
            child.signal(SIGKILL)
            _ = child.waitForExit(timeoutMilliseconds: 5_000)
        }
        let status = try String(contentsOfFile: "/proc/\(child.pid)/status", encoding: .utf8)
        let line = status.split(separator: "\n").first { $0.hasPrefix("Cpus_allowed_list:") }
        #expect(line?.split(separator: "\t").last.map(String.init) == "\(cpu)", "\(line ?? "no Cpus_allowed_list")")
        #expect(CoreBinding.allowedCPUs() == allowed)
        #expect(CoreBinding.plan(peers: allowed.count) == allowed)
        #expect(CoreBinding.plan(peers: allowed.count + 1) == nil)
        #expect(throws: LaunchError.self) { try ChildProcess(executable: "/bin/true", arguments: [], cpu: Int32(1 << 20)) }
    }

    @Test func aBenchSweepFromZeroEndsAndBadSizesAreRefused() throws {
        let zero = try ChildProcess(executable: ProcessFaultTests.binaries + "/chorus-bench",
                                    arguments: ["allreduce", "--local", "2", "-b", "0", "-e", "0", "-n", "2", "-w", "0"],
                                    captureOutput: true)
        #expect(zero.waitForExit(timeoutMilliseconds: 120_000) == 0, "\(zero.output(timeoutMilliseconds: 1_000))")
        let reversed = try ChildProcess(executable: ProcessFaultTests.binaries + "/chorus-bench",
                                        arguments: ["allreduce", "--local", "2", "-b", "64K", "-e", "4K"], captureOutput: true)
        #expect(reversed.waitForExit(timeoutMilliseconds: 30_000) == 64) // ArgumentParser's validation status
    }
}
