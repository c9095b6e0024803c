// --state-mib M --role source|joiner [--pause-file PATH]: before its all-reduce rounds, the peer
// synchronizes M MiB of f32 shared state. Sources hold the expected values at revision 9; a joiner
// holds other values at revision 0. With --pause-file, the joiner stops in its progress callback at
// 30% and prints PAUSED until that file exists (the test kills a source meanwhile). Then it prints
//   SYNCED outdated=B exact=B lost=N revision=R hash=H
import Chorus
#if canImport(Glibc)
import Glibc
#endif

func expectedWeight(_ i: Int) -> Float { Float(i % 999_983) * 0.5 - Float(i / 999_983) }

func option(_ name: String) -> String? {
    guard let index = CommandLine.arguments.firstIndex(of: "--\(name)"), index + 1 < CommandLine.arguments.count else { return nil }
    return CommandLine.arguments[index + 1]
}

func synchronizeState(_ communicator: Communicator) throws {
    let count = argument("state-mib", default: 16) << 18
    let joiner = option("role") == "joiner"
    let state = SharedState(revision: joiner ? 0 : 9)
    try state.add("w", values: (0 ..< count).map { joiner ? Float(-$0) : expectedWeight($0) })
    var paused = false
    let result = try communicator.synchronize(state) { progress in
        guard let file = option("pause-file"), !paused, progress.bytesReceived * 10 >= progress.bytesTotal * 3 else { return }
        paused = true
        say("PAUSED received=\(progress.bytesReceived) of=\(progress.bytesTotal)")
        for _ in 0 ..< 6000 where access(file, F_OK) != 0 { usleep(5000) }
    }
    let exact = state["w"]!.withUnsafeMutableBufferPointer(as: Float.self) { w in
        w.indices.allSatisfy { w[$0].bitPattern == expectedWeight($0).bitPattern }
    }
    say("SYNCED outdated=\(result.wasOutdated) exact=\(exact) lost=\(result.lostSources.count) revision=\(state.revision) hash=\(state.contentHash)")
}
