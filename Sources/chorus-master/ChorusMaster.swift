import ArgumentParser
import Chorus
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

    @Flag(help: "Print nothing but the listening line.")
    var quiet = false

    func run() throws {
        let configuration = try Configuration.fromEnvironment()
        let log: (@Sendable (String) -> Void)? = quiet ? nil : printLine
        let master: Master = try Master(host: host, port: port, configuration: configuration, log: log)
        print("chorus-master listening on \(master.endpoint)")
        fflush(nil)
        while true { pause() } // runs until killed
    }
}

@Sendable func printLine(_ line: String) {
    print(line)
    fflush(nil)
}
