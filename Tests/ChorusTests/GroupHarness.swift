import Chorus
import Foundation
import Synchronization

/// Runs a group of peers as threads of this process, each with its own Communicator, engine and
/// sockets (real loopback TCP, ephemeral ports), against an embedded master.
enum GroupHarness {
    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    /// A configuration with short timeouts, so a broken test fails fast instead of hanging.
    static func testConfiguration(segmentBytes: Int = 1 << 20) -> Configuration {
        var c = Configuration()
        c.segmentBytes = segmentBytes
        c.peerTimeout = .seconds(10)
        c.operationTimeout = .seconds(60)
        c.admissionTimeout = .seconds(60)
        c.spinWait = .microseconds(20)
        return c
    }

    /// Starts `worldSize` peers, waits until they form one epoch, runs `body` on each, and returns
    /// once all finished (or throws after `timeout`). Errors thrown by a body are rethrown. Each peer
    /// is a task on its own thread (`ThreadPerJobExecutor`), so an `#expect` in `body` is attributed
    /// to the test that called `run`.
    static func run(worldSize: Int, configuration: Configuration = testConfiguration(),
                    timeout: Duration = .seconds(300),
                    _ body: @escaping @Sendable (Communicator) throws -> Void) throws {
        let master = try Master(host: "127.0.0.1", port: 0, configuration: configuration)
        defer { master.shutdown() }
        try run(master: master.endpoint, worldSize: worldSize, configuration: configuration, timeout: timeout, body)
    }

    /// `run` against a master that is already there (several groups of one master).
    static func run(master endpoint: String, worldSize: Int, configuration: Configuration = testConfiguration(),
                    timeout: Duration = .seconds(300),
                    _ body: @escaping @Sendable (Communicator) throws -> Void) throws {
        let errors = Mutex<[String]>([])
        let finished = DispatchSemaphore(value: 0)
        for _ in 0 ..< worldSize {
            Task(executorPreference: ThreadPerJobExecutor.shared) { @Sendable in
                do {
                    let communicator = try Communicator(master: endpoint, configuration: configuration)
                    while communicator.worldSize < worldSize {
                        try communicator.updateTopology(minimumWorldSize: worldSize)
                    }
                    try body(communicator)
                } catch {
                    errors.withLock { $0.append("\(error)") }
                }
                finished.signal()
            }
        }
        let deadline = DispatchTime.now() + .seconds(Int(timeout.components.seconds))
        for _ in 0 ..< worldSize {
            guard finished.wait(timeout: deadline) == .success else { throw Failure("group of \(worldSize) timed out") }
        }
        let messages = errors.withLock { $0 }
        if !messages.isEmpty { throw Failure(messages.joined(separator: "; ")) }
    }
}
