import Chorus
import Foundation

/// One process's share of a group: `threads` communicators, each on its own thread.
struct Worker {
    let master: String
    let world: Int
    let threads: Int
    let rounds: Int
    let operations: Int
    let bytes: Int

    func run() throws {
        let failures = Failures()
        let done = DispatchGroup()
        for _ in 0 ..< threads {
            done.enter()
            let thread = Thread {
                defer { done.leave() }
                do { try member() } catch { failures.add("\(error)") }
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
        done.wait()
        if let failure = failures.first { throw failure }
    }

    /// One member: join, time `rounds` formations and `operations` all-reduces, mark the end of the
    /// collectives with one more formation (the launcher reads the master's CPU per epoch), leave.
    private func member() throws {
        let c = try Communicator(master: master, configuration: try Configuration.fromEnvironment())
        while c.worldSize < world { try c.updateTopology(minimumWorldSize: world) }
        var formations: [Double] = []
        for _ in 0 ..< rounds {
            try c.barrier()
            let started = ContinuousClock.now
            try c.updateTopology()
            formations.append(seconds(ContinuousClock.now - started))
        }
        let links = try c.allReduce([Int32(c.openConnectionCount)], op: .max)[0]
        formations = try c.allReduce(formations, op: .max)
        var values = [Float](repeating: Float(c.rank), count: bytes / 4)
        try c.barrier()
        let started = ContinuousClock.now
        for _ in 0 ..< operations { try c.allReduce(&values) }
        let perOperation = try c.allReduce([seconds(ContinuousClock.now - started) / Double(operations)], op: .max)[0]
        try c.updateTopology()
        if c.rank == 0 {
            let result = WorkerResult(formationSeconds: formations, operationSeconds: perOperation, linksPerPeer: Int(links))
            print("result " + String(decoding: try JSONEncoder().encode(result), as: UTF8.self))
        }
        try c.barrier() // everyone's links are up before anyone leaves (a leave aborts a forming epoch)
        try c.leave()
    }

    private func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
}

/// The first error of any member thread.
final class Failures: @unchecked Sendable {
    private let lock = NSLock()
    private var errors: [String] = []
    func add(_ error: String) { lock.withLock { errors.append(error) } }
    var first: (any Error)? { lock.withLock { errors.first.map { ValidationFailure(description: $0) } } }
}

struct ValidationFailure: Error, CustomStringConvertible { let description: String }
