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

    @Option(help: "A file holding the shared secret every peer must prove it holds (at least 16 bytes; e.g. head -c 32 /dev/urandom | base64 > FILE). Overrides CHORUS_SECRET_FILE and CHORUS_SECRET. Without one, anyone who can reach the master may join.")
    var secretFile: String?

    @Option(help: "Log level: trace, debug, info (registrations, epochs, lost peers), notice, warning (aborts), error, critical. Logs go to standard error.")
    var logLevel = "info"

    func run() throws {
        var configuration = try Configuration.fromEnvironment()
        guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("unknown log level '\(logLevel)'") }
        configuration.logger.logLevel = level
        if let secretFile { configuration.secret = try Configuration.readSecretFile(secretFile) }
        let master: Master = try Master(host: host, port: port, configuration: configuration)
        print("chorus-master listening on \(master.endpoint)")
        fflush(nil)
        while true { pause() } // runs until killed
    }
}
