import Foundation
import Testing

/// A consumer without libibverbs-dev and librdmacm-dev must still build Chorus (RDMA then reports
/// itself unavailable). This machine may have the headers installed, so the test hides them: it
/// compiles the C transport against a copy of the system include tree without `infiniband/` and
/// `rdma/`, links a small program that asks for RDMA, and runs it.
@Suite struct BuildWithoutRDMAHeadersTests {
    static let transportDirectory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("CModules/CChorusTransport")

    @Test func theTransportBuildsAndReportsRDMAUnavailableWithoutTheHeaders() throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("chorus-no-rdma-\(getpid())")
        try? FileManager.default.removeItem(at: work)
        defer { try? FileManager.default.removeItem(at: work) }
        let include = work.appendingPathComponent("include")
        try Self.mirrorSystemHeaders(into: include, hiding: ["infiniband", "rdma"])

        let clang = try #require(Self.which("clang"), "clang (from the Swift toolchain) is needed")
        let resource = try Self.run(clang, ["-print-resource-dir"]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        let isolated = ["-nostdinc", "-isystem", resource + "/include",
                        "-isystem", include.path + "/x86_64-linux-gnu", "-isystem", include.path]

        // The headers really are out of reach: including one fails.
        let probeHeaders = work.appendingPathComponent("needs-verbs.c")
        try "#include <infiniband/verbs.h>\n".write(to: probeHeaders, atomically: true, encoding: .utf8)
        let refused = try Self.run(clang, isolated + ["-fsyntax-only", probeHeaders.path])
        #expect(refused.status != 0, "the hidden include tree still has infiniband/verbs.h")

        let main = work.appendingPathComponent("main.c")
        try """
        #include <stdio.h>
        #include "chorus_transport.h"
        int main(void) {
            char why[512] = {0};
            int status = chorus_rdma_probe(why, sizeof why);
            uint64_t handle = 0;
            int registered = chorus_rdma_register(why, 16, &handle);
            // The engine's paths: RDMA is refused before anything is bound, TCP works, an unknown one is invalid.
            chorus_engine_config config = {.max_queued_events = 16, .max_control_bytes = 1024};
            chorus_engine *engine = NULL;
            uint16_t port = 0;
            if (chorus_engine_create(&config, &engine) != CHORUS_OK) return 1;
            int rdma = chorus_engine_listen(engine, "127.0.0.1", 0, 0, 16, CHORUS_PATH_RDMA, &port);
            int unknown = chorus_engine_listen(engine, "127.0.0.1", 0, 0, 16, 7, &port);
            int tcp = chorus_engine_listen(engine, "127.0.0.1", 0, 0, 16, CHORUS_PATH_TCP, &port);
            chorus_engine_destroy(engine);
            printf("%d %d %d %d %d %s\\n", status, registered, rdma, unknown, tcp, why);
            return 0;
        }
        """.write(to: main, atomically: true, encoding: .utf8)
        let sources = try FileManager.default.subpathsOfDirectory(atPath: Self.transportDirectory.path)
            .filter { $0.hasSuffix(".c") }.map { Self.transportDirectory.appendingPathComponent($0).path }
        #expect(sources.contains { $0.hasSuffix("/rdma/verbs.c") } && sources.contains { $0.hasSuffix("/rdma/rdma_path.c") })
        let program = work.appendingPathComponent("probe").path
        let build = try Self.run(clang, isolated + ["-std=gnu11", "-Wall", "-Werror",
                                                    "-I", Self.transportDirectory.appendingPathComponent("include").path,
                                                    main.path] + sources + ["-o", program, "-lpthread", "-ldl"])
        try #require(build.status == 0, "the transport did not build without the RDMA headers:\n\(build.output)")

        let ran = try Self.run(program, [])
        #expect(ran.status == 0)
        #expect(ran.output.hasPrefix("-140 -140 -140 -132 0 this build of Chorus has no RDMA backend"), "got: \(ran.output)")
    }

    /// Symlinks every entry of /usr/include (and of its multiarch folder) into `root`, except `hidden`.
    static func mirrorSystemHeaders(into root: URL, hiding hidden: Set<String>) throws {
        let files = FileManager.default
        for (source, destination) in [("/usr/include", root), ("/usr/include/x86_64-linux-gnu", root.appendingPathComponent("x86_64-linux-gnu"))] {
            try files.createDirectory(at: destination, withIntermediateDirectories: true)
            for name in try files.contentsOfDirectory(atPath: source) where !hidden.contains(name) && name != "x86_64-linux-gnu" {
                try files.createSymbolicLink(atPath: destination.appendingPathComponent(name).path,
                                             withDestinationPath: source + "/" + name)
            }
        }
    }

    static func which(_ tool: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin"
        return path.split(separator: ":").map { "\($0)/\(tool)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }
}
