#if canImport(Glibc)
import Glibc
#endif

/// Peer processes a local launcher starts together (`chorus-bench --local`, the examples). Waiting
/// on them has one deadline for all, and the first child that exits with a code it was not expected
/// to stops the rest at once: a failed peer never leaves its siblings waiting for a group that can
/// no longer form.
public final class LocalGroup {
    /// A child that failed, or a group that outlived its deadline.
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        /// The failed child's exit code; nil when the deadline passed.
        public let exitCode: Int32?
    }

    private struct Member {
        let name: String
        let child: ChildProcess
        let expectedExitCodes: Set<Int32>
    }

    private var members: [Member] = []

    public init() {}

    /// Starts a child (see `ChildProcess.init`).
    /// - Parameters:
    ///   - name: how messages call it ("peer 2").
    ///   - expectedExitCodes: the codes that count as success (a peer killed on purpose: 128 + SIGKILL).
    @discardableResult
    public func start(_ name: String, executable: String, arguments: [String], environment: [String: String] = [:],
                      captureOutput: Bool = false, cpu: Int32? = nil, expectedExitCodes: Set<Int32> = [0]) throws -> ChildProcess {
        let child = try ChildProcess(executable: executable, arguments: arguments, environment: environment,
                                     captureOutput: captureOutput, cpu: cpu)
        members.append(Member(name: name, child: child, expectedExitCodes: expectedExitCodes))
        return child
    }

    /// Waits until every child has exited. The first unexpected exit code, or the deadline, SIGKILLs
    /// the children still running and throws `Failure` naming what happened.
    /// - Returns: every child's exit code, by name.
    @discardableResult
    public func waitAll(timeoutMilliseconds: Int) throws -> [String: Int32] {
        let deadline = monotonicMilliseconds() + timeoutMilliseconds
        var codes: [String: Int32] = [:]
        while codes.count < members.count {
            for member in members where codes[member.name] == nil {
                guard let code = member.child.waitForExit(timeoutMilliseconds: 0) else { continue }
                codes[member.name] = code
                if !member.expectedExitCodes.contains(code) {
                    let stopped = stopRunning()
                    throw Failure(description: "\(member.name) exited with \(Self.describe(code))"
                        + (stopped.isEmpty ? "" : "; stopped \(stopped.joined(separator: ", "))"), exitCode: code)
                }
            }
            guard codes.count < members.count else { break }
            if monotonicMilliseconds() >= deadline {
                let stopped = stopRunning()
                throw Failure(description: "not finished after \(timeoutMilliseconds / 1000) s; stopped \(stopped.joined(separator: ", "))",
                              exitCode: nil)
            }
            var pause = timespec(tv_sec: 0, tv_nsec: 20_000_000)
            nanosleep(&pause, nil)
        }
        return codes
    }

    /// SIGKILLs every child still running and reaps it; returns their names.
    @discardableResult
    public func stopRunning() -> [String] {
        var stopped: [String] = []
        for member in members where member.child.waitForExit(timeoutMilliseconds: 0) == nil {
            member.child.signal(SIGKILL)
            _ = member.child.waitForExit(timeoutMilliseconds: 5_000)
            stopped.append(member.name)
        }
        return stopped
    }

    deinit { stopRunning() }

    private static func describe(_ code: Int32) -> String {
        code > 128 ? "\(code) (signal \(code - 128))" : "\(code)"
    }
}
