import ArgumentParser
import Chorus
import Logging
#if canImport(Glibc)
import Glibc
#endif

@main
struct ChorusMaster: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chorus-master",
        abstract: "Runs the Chorus membership master: registration, admission, ring order, verdicts.")

    @Option(help: "Address to listen on. Loopback unless you ask for more (0.0.0.0 for every interface).")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on.")
    var port: UInt16 = Master.defaultPort

    @Option(help: "Log level: trace, debug, info (registrations, epochs, lost peers), notice, warning (aborts), error, critical. Logs go to standard error.")
    var logLevel = "info"

    func run() throws {
        var configuration = try Configuration.fromEnvironment()
        guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("unknown log level '\(logLevel)'") }
        configuration.logger.logLevel = level
        let master: Master = try Master(host: host, port: port, configuration: configuration)
        print("chorus-master listening on \(master.endpoint)")
        fflush(nil)
        while true { pause() } // runs until killed
    }
}
