import Logging

/// Logs refused connections (a failed handshake) without letting a flood of them flood the log: the
/// first `burst` of each `window` are logged one by one, the rest are counted and summed up in one
/// line when the window is over.
struct RefusalLog {
    private let burst = 10
    private let window: Duration = .seconds(10)
    private var windowStart = ContinuousClock.now
    private var logged = 0
    private var suppressed = 0

    mutating func refused(_ message: @autoclosure () -> String, logger: Logger) {
        flush(logger: logger)
        if logged < burst {
            logged += 1
            logger.warning("\(message())")
        } else {
            suppressed += 1
        }
    }

    /// Ends the window once it is over, summing up what it did not log.
    mutating func flush(logger: Logger) {
        guard ContinuousClock.now - windowStart >= window else { return }
        if suppressed > 0 { logger.warning("\(suppressed) more connections were refused in the last \(window) (not logged one by one)") }
        windowStart = .now
        logged = 0
        suppressed = 0
    }
}
