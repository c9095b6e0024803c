import Chorus
#if canImport(Glibc)
import Glibc
#endif

/// A peer process started by a local launcher (demo, bench, tests): real processes, real signals.
public final class ChildProcess: @unchecked Sendable {
    /// The child's process id.
    public let pid: pid_t
    private var outputDescriptor: Int32
    private var collected: [UInt8] = []
    private var exitStatus: Int32?

    /// Starts `executable` with `arguments` and the current environment plus `environment`.
    /// - Parameters:
    ///   - captureOutput: read the child's stdout through a pipe (`output(until:)`); otherwise it
    ///     shares ours.
    ///   - cpu: bind the child, every thread of it, to this CPU (`CoreBinding`); nil: unbound.
    public init(executable: String, arguments: [String], environment: [String: String] = [:],
                captureOutput: Bool = false, cpu: Int32? = nil) throws {
        var pipeEnds: [Int32] = [-1, -1]
        if captureOutput {
            guard pipe(&pipeEnds) == 0 else { throw LaunchError("pipe failed: errno \(errno)") }
            // Neither end may leak into other children; dup2 onto the child's stdout clears the flag there.
            for end in pipeEnds { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if captureOutput { posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 1) }

        var merged = Configuration.currentEnvironment()
        for (key, value) in environment { merged[key] = value }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = merged.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        var child: pid_t = 0
        let spawn = { posix_spawn(&child, executable, &actions, nil, argv, envp) }
        let status = try cpu.map { try CoreBinding.whileBound(to: $0, spawn) } ?? spawn()
        if captureOutput { close(pipeEnds[1]) }
        guard status == 0 else {
            if captureOutput { close(pipeEnds[0]) }
            throw LaunchError("cannot start \(executable): errno \(status)")
        }
        pid = child
        outputDescriptor = pipeEnds[0]
    }

    deinit {
        if exitStatus == nil {
            kill(pid, SIGKILL)
            _ = waitForExit(timeoutMilliseconds: 5_000)
        }
        if outputDescriptor >= 0 { close(outputDescriptor) }
    }

    /// Sends a signal (SIGKILL, SIGSTOP, SIGCONT, ...).
    public func signal(_ number: Int32) { kill(pid, number) }

    /// Waits for the child to exit, up to the timeout. Returns its exit code (128+signal when
    /// killed), or nil if it is still running.
    public func waitForExit(timeoutMilliseconds: Int) -> Int32? {
        if let exitStatus { return exitStatus }
        let deadline = monotonicMilliseconds() + timeoutMilliseconds
        while true {
            var status: Int32 = 0
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid {
                let signalled = status & 0x7F
                exitStatus = signalled == 0 ? (status >> 8) & 0xFF : 128 + signalled
                return exitStatus
            }
            if result < 0 || monotonicMilliseconds() >= deadline { return nil }
            drainOutput(waitMilliseconds: 20) // also paces this loop
        }
    }

    /// Everything the child wrote to stdout so far (when captured), after reading what arrives within
    /// the timeout.
    public func outputSoFar(waitMilliseconds: Int) -> String {
        drainOutput(waitMilliseconds: waitMilliseconds)
        return String(decoding: collected, as: UTF8.self)
    }

    /// Everything the child wrote to stdout so far (when captured), reading until it closes the pipe
    /// or the timeout passes.
    public func output(timeoutMilliseconds: Int) -> String {
        let deadline = monotonicMilliseconds() + timeoutMilliseconds
        while outputDescriptor >= 0 && monotonicMilliseconds() < deadline {
            drainOutput(waitMilliseconds: max(1, deadline - monotonicMilliseconds()))
        }
        return String(decoding: collected, as: UTF8.self)
    }

    private func drainOutput(waitMilliseconds: Int) {
        guard outputDescriptor >= 0 else {
            var request = timespec(tv_sec: 0, tv_nsec: waitMilliseconds * 1_000_000)
            nanosleep(&request, nil)
            return
        }
        var descriptor = pollfd(fd: outputDescriptor, events: Int16(POLLIN), revents: 0)
        guard poll(&descriptor, 1, Int32(waitMilliseconds)) > 0 else { return }
        var buffer = [UInt8](repeating: 0, count: 65536)
        let got = read(outputDescriptor, &buffer, buffer.count)
        if got > 0 {
            collected += buffer[0 ..< got]
        } else if got == 0 || errno != EINTR {
            close(outputDescriptor)
            outputDescriptor = -1
        }
    }

    /// The path of the running executable (to start copies of it, or its siblings).
    public static func currentExecutable() -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        return length > 0 ? String(decoding: buffer[0 ..< length].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
    }
}

/// A child could not be started.
public struct LaunchError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// CLOCK_MONOTONIC in microseconds: comparable across the processes of one machine (logs, timeouts).
public func monotonicMicroseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000
}

/// CLOCK_MONOTONIC in milliseconds.
public func monotonicMilliseconds() -> Int { Int(monotonicMicroseconds() / 1000) }
