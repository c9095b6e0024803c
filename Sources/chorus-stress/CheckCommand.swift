import ArgumentParser

/// Judges the logs of an earlier run again (`--log-dir` kept them): the same checker the run uses,
/// so a log can be re-examined, and a log with a fault written into it shows the checker catches it.
struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check", abstract: "Check the logs a run left in a directory (see --log-dir).")

    @Option(help: "The directory holding driver.log and the peer-N.log files.") var logDir: String
    @Option(help: "Elements per all-reduce the run used (f32).") var count = 1024
    @Option(help: "The run's peer timeout (ms); the hang bound derives from it.") var peerTimeoutMs = 1500
    @Option(help: "Write the report as JSON here.") var json: String?

    func run() throws {
        let now = Resources.current()
        let report = Checker(directory: logDir, count: count, hangBoundMs: Checker.hangBound(peerTimeoutMs: peerTimeoutMs))
            .report(stragglers: 0, resourcesBefore: now, resourcesAfter: now)
        print(report.table)
        if let json { try report.writeJSON(to: json) }
        if !report.passed { throw ExitCode.failure }
    }
}
