import Chorus
import ChorusLauncher
import Foundation
import Testing

/// The C ABI from C: a program compiled against chorus.h and linked with libchorus.so, three
/// processes of it against one master, every collective and the shared state checked exactly.
@Suite(.serialized) struct CABITests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test func aCProgramRunsEveryCollectiveInThreeProcesses() throws {
        let library = ProcessFaultTests.binaries
        #expect(FileManager.default.fileExists(atPath: library + "/libchorus.so"), "libchorus.so is built with the tests")
        let program = FileManager.default.temporaryDirectory.appendingPathComponent("chorus-c-test-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: program) }
        let clang = try #require(["/opt/swift/usr/bin/clang", "/usr/bin/clang", "/usr/bin/cc"].first { FileManager.default.isExecutableFile(atPath: $0) }
            ?? (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map { "\($0)/clang" }
            .first { FileManager.default.isExecutableFile(atPath: $0) })
        let build = try ChildProcess(executable: clang, arguments: [
            "-std=c99", "-Wall", "-Wextra", "-Werror", "-I", Self.root.path + "/CModules/CChorus/include",
            Self.root.path + "/Tests/CABI/chorus_c_test.c", "-L", library, "-lchorus", "-Wl,-rpath," + library, "-o", program,
        ], captureOutput: true)
        #expect(build.waitForExit(timeoutMilliseconds: 120_000) == 0, "\(build.output(timeoutMilliseconds: 1_000))")

        let master = try Master(host: "127.0.0.1", port: 0)
        defer { master.shutdown() }
        let group = LocalGroup()
        let peers = try (0 ..< 3).map { index in
            try group.start("C peer \(index)", executable: program, arguments: [master.endpoint, "3"], captureOutput: true)
        }
        try group.waitAll(timeoutMilliseconds: 120_000)
        var hashes: Set<String> = []
        for peer in peers {
            let output = peer.output(timeoutMilliseconds: 1_000)
            #expect(output.contains("PASS rank="), "\(output)")
            hashes.formUnion(output.split(separator: "\n").filter { $0.hasPrefix("HASH ") }.map(String.init))
        }
        #expect(hashes.count == 1, "the synchronized states hash the same: \(hashes)")
    }
}
