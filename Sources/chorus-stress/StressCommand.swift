import ArgumentParser

@main
struct ChorusStress: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chorus-stress",
        abstract: "Churn stress test: peers join, leave, are killed and stopped while they all-reduce; a checker proves every collective had one outcome and the right result.",
        subcommands: [Drive.self, StressPeer.self, Check.self, GuessSecret.self, Flood.self], defaultSubcommand: Drive.self)
}
