import Chorus
import ChorusLauncher
import Foundation
import Glibc
import Testing

/// Shared memory inside a group of real peer processes (the default transport on one host), mixed
/// with TCP in one ring when a member cannot see the others' shared memory, as on another host.
extension ProcessFaultTests {
    /// Segments a process has mapped, from its /proc maps.
    static func mappedSegments(of pid: pid_t) -> Int {
        let maps = (try? String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8)) ?? ""
        return maps.split(separator: "\n").filter { $0.contains("/dev/shm/chorus-") }.count
    }

    /// Three peers in a ring, the third in a mount namespace of its own with a private /dev/shm: the
    /// segments it is offered do not exist for it, and the ones it offers do not exist for the others,
    /// so its two links stay on the stream while the link between the first two uses shared memory.
    /// Every round is correct and bit-identical everywhere; a SIGKILL of the far member then gives one
    /// verdict, and the two left re-form and go on over shared memory.
    @Test func aMemberThatCannotSeeTheOthersSharedMemoryIsReachedOverTCPInTheSameRing() throws {
        let master = try Master(host: "127.0.0.1", port: 0)
        defer { master.shutdown() }
        let arguments = ["--master", master.endpoint, "--world", "3", "--count", "\(1 << 21)", "--rounds", "8", "--gap-ms", "100"]
        var peers = try (0 ..< 2).map { _ in
            try ChildProcess(executable: Self.binaries + "/chorus-test-peer", arguments: arguments,
                             environment: Self.environment, captureOutput: true)
        }
        let isolated = "mount -t tmpfs tmpfs /dev/shm && exec \"$0\" \"$@\""
        peers.append(try ChildProcess(executable: "/usr/bin/unshare",
                                      arguments: ["--mount", "--propagation", "private", "/bin/sh", "-c", isolated,
                                                  Self.binaries + "/chorus-test-peer"] + arguments,
                                      environment: Self.environment, captureOutput: true))
        #expect(Self.waitForRound(1, peers))
        let segments = peers.map { Self.mappedSegments(of: $0.pid) }
        // The first two map the segments of their links (ring lane and mesh link), the isolated one none.
        #expect(segments[0] >= 1 && segments[0] == segments[1] && segments[2] == 0, "\(segments)")
        peers[2].signal(SIGKILL)
        #expect(peers[2].waitForExit(timeoutMilliseconds: 10_000) == 128 + SIGKILL)
        Self.checkRecovery(survivors: Array(peers[0 ..< 2]), expectedWorld: 2)
    }
}
