import ChorusAlgorithms
import ChorusProtocol
#if canImport(Glibc)
import Glibc
#endif

/// What the communicator's lock protects: the session and reusable memory for collectives.
/// Only touched under `Communicator.coreLock`, hence the unchecked Sendable.
final class Core: @unchecked Sendable {
    var session: PeerSession?
    /// When the last verdict came: the master's thread spins `spinWait` after its last message and
    /// then sleeps (see `OperationLinks.owedBegin`).
    private var lastVerdictAt = ContinuousClock.now
    var scratch = Workspace()
    private var backup = Workspace()
    private var gathered = Workspace()
    private var feedbackBackup = Workspace()
    /// A pair's tokens (`PairToken`): one operation's at a time, as moving data holds the lock.
    private var pairTokenWords = Workspace()
    /// Each link `optimizeTopology()` measured, the same at every member that took part (see
    /// `optimizeTopology(settings:minimumWorldSize:admitting:)`).
    var linkCosts: [DirectedLink: MeasuredLink] = [:]
    /// Operations started in flight (`start`) whose verdicts have not been taken, oldest first.
    var inFlight: [InFlightOperation] = []
    /// Every call of the epoch so far, folded (`chained`): what the members compare before they
    /// commit an operation among themselves.
    private var callChain: (epoch: UInt64, value: UInt64) = (0, 0)

    init(session: PeerSession) { self.session = session }

    func openSession() throws(ChorusError) -> PeerSession {
        guard let session else { throw .invalidArgument("this communicator has left the group") }
        return session
    }

    /// A session ready for a blocking collective: the operations in flight have their verdicts.
    func readySession() throws(ChorusError) -> PeerSession {
        let session = try openSession()
        settleAllInFlight()
        if session.needsTopologyUpdate { throw .topologyUpdateRequired }
        return session
    }

    /// Runs a collective to its verdict: `plan` gives what it moves (nil: alone, done locally).
    func run(_ plan: (PeerSession) throws(ChorusError) -> OperationPlan?) throws(ChorusError) {
        let session = try readySession()
        guard let plan = try plan(session) else { return }
        try runToVerdict(session: session, descriptor: plan.descriptor, route: plan.route,
                         restore: preserve(plan.overwritten), dataPhase: plan.run)
    }

    /// An all-reduce. `input == output` means in place.
    func allReducePlan(session: PeerSession, input: UnsafeRawPointer, output: UnsafeMutableRawPointer, count: Int,
                       dataType: DataType, op: ReduceOp, algorithm: AllReduceAlgorithm) -> OperationPlan? {
        let bytes = count * dataType.size
        let worldSize = session.topology.members.count
        if worldSize == 1 {
            // Alone, the reduction is the input itself; nothing to agree on.
            if bytes > 0, input != UnsafeRawPointer(output) { output.copyMemory(from: input, byteCount: bytes) }
            return nil
        }
        let chosen = algorithm.resolved(bytes: bytes, worldSize: worldSize, configuration: session.configuration)
        let descriptor = OperationDescriptor(collective: Collective.allReduce.rawValue, dataType: dataType.rawValue,
                                             reduceOp: op.rawValue, count: UInt64(count), detail: chosen.wireValue)
        return OperationPlan(descriptor: descriptor, route: chosen == .ring ? .ring : .mesh,
                             overwritten: input == UnsafeRawPointer(output) ? [(output, bytes)] : []) { links in
            switch chosen {
            case .recursiveDoubling:
                let rd = RecursiveDoublingAllReduce(count: count, dataType: dataType, op: op)
                try rd.run(links: links, input: input, output: output, scratch: self.scratch.pointer(bytes: rd.scratchBytes))
            default:
                let ring = RingCollective(.allReduce, count: count, dataType: dataType, op: op,
                                          segmentBytes: session.configuration.segmentBytes)
                try ring.run(links: links, input: input, output: output,
                             scratch: self.scratch.pointer(bytes: ring.scratchBytes(worldSize: worldSize)))
            }
        }
    }

    /// A quantized all-reduce (`QuantizedAllReduce`). `feedback` (count f32) is put back with an
    /// in-place input when the operation aborts, so a retry starts from the same state.
    func quantizedAllReducePlan(session: PeerSession, input: UnsafeRawPointer, output: UnsafeMutableRawPointer, count: Int,
                                dataType: DataType, op: ReduceOp, format: Quantization,
                                feedback: UnsafeMutablePointer<Float>?) -> OperationPlan? {
        let worldSize = session.topology.members.count
        let algorithm = QuantizedAllReduce(count: count, dataType: dataType, op: op, format: format,
                                           segmentBytes: session.configuration.segmentBytes)
        if worldSize == 1 {
            algorithm.runAlone(input: input, output: output, feedback: feedback,
                               scratch: scratch.pointer(bytes: algorithm.scratchBytes(worldSize: 1)))
            return nil
        }
        let descriptor = OperationDescriptor(collective: Collective.allReduce.rawValue, dataType: dataType.rawValue,
                                             reduceOp: op.rawValue, count: UInt64(count), detail: format.quantizedDetail)
        let bytes = count * dataType.size
        var overwritten: [(UnsafeMutableRawPointer, Int)] = input == UnsafeRawPointer(output) ? [(output, bytes)] : []
        if let feedback { overwritten.append((UnsafeMutableRawPointer(feedback), count * 4)) }
        return OperationPlan(descriptor: descriptor, route: .ring, overwritten: overwritten) { links in
            try algorithm.run(links: links, input: input, output: output, feedback: feedback,
                              scratch: self.scratch.pointer(bytes: algorithm.scratchBytes(worldSize: worldSize)))
        }
    }

    /// Reduce-scatter: `input` holds worldSize blocks of `count`; block `rank` of the reduction lands in `output`.
    func reduceScatterPlan(session: PeerSession, input: UnsafeRawPointer, output: UnsafeMutableRawPointer, count: Int,
                           dataType: DataType, op: ReduceOp) -> OperationPlan? {
        let n = session.topology.members.count, bytes = count * dataType.size
        if n == 1 {
            if bytes > 0 { output.copyMemory(from: input, byteCount: bytes) }
            return nil
        }
        let descriptor = OperationDescriptor(collective: Collective.reduceScatter.rawValue, dataType: dataType.rawValue,
                                             reduceOp: op.rawValue, count: UInt64(count))
        return OperationPlan(descriptor: descriptor, route: .ring) { links in
            let ring = RingCollective(.reduceScatter, count: count * n, dataType: dataType, op: op,
                                      segmentBytes: session.configuration.segmentBytes)
            let whole = self.gathered.pointer(bytes: bytes * n)
            try ring.run(links: links, input: input, output: whole,
                         scratch: self.scratch.pointer(bytes: ring.scratchBytes(worldSize: n)))
            output.copyMemory(from: whole + session.rank * bytes, byteCount: bytes)
        }
    }

    /// All-gather: every rank's `count` elements land in block `rank` of `output` (worldSize blocks).
    func allGatherPlan(session: PeerSession, input: UnsafeRawPointer, output: UnsafeMutableRawPointer, count: Int,
                       dataType: DataType) -> OperationPlan? {
        let n = session.topology.members.count, bytes = count * dataType.size
        if bytes > 0 { (output + session.rank * bytes).copyMemory(from: input, byteCount: bytes) }
        if n == 1 { return nil }
        let descriptor = OperationDescriptor(collective: Collective.allGather.rawValue, dataType: dataType.rawValue,
                                             reduceOp: 0, count: UInt64(count))
        return OperationPlan(descriptor: descriptor, route: .ring) { links in
            let ring = RingCollective(.allGather, count: count * n, dataType: dataType,
                                      segmentBytes: session.configuration.segmentBytes)
            try ring.run(links: links, input: output, output: output, scratch: nil)
        }
    }

    /// Broadcast of `bytes` from `root`'s buffer into everyone's.
    func broadcastPlan(session: PeerSession, buffer: UnsafeMutableRawPointer, bytes: Int, root: Int) throws(ChorusError) -> OperationPlan? {
        let n = session.topology.members.count
        guard (0 ..< n).contains(root) else { throw .invalidArgument("root \(root) is not a rank of a world of \(n)") }
        if n == 1 { return nil }
        let descriptor = OperationDescriptor(collective: Collective.broadcast.rawValue, dataType: 0, reduceOp: 0,
                                             count: UInt64(bytes), detail: UInt64(root))
        return OperationPlan(descriptor: descriptor, route: .ring, overwritten: session.rank == root ? [] : [(buffer, bytes)]) { links in
            try ChainBroadcast(bytes: bytes, root: root, segmentBytes: session.configuration.segmentBytes)
                .run(links: links, buffer: buffer)
        }
    }

    /// All-Scan: X and I of this rank's position land in `exclusive` and `inclusive` (either may be
    /// nil: workspace stands in).
    func allScanPlan(session: PeerSession, state: UnsafeRawPointer, decay: UnsafeRawPointer?, decayCount: Int, count: Int,
                     dataType: DataType, op: ScanOperator, reverse: Bool, blocks: Int?, algorithm: ScanAlgorithm,
                     exclusive: UnsafeMutableRawPointer?, inclusive: UnsafeMutableRawPointer?) -> OperationPlan? {
        let n = session.topology.members.count, bytes = count * dataType.size
        let exclusive = exclusive ?? backup.pointer(bytes: max(1, bytes))
        let inclusive = inclusive ?? gathered.pointer(bytes: max(1, bytes))
        if n == 1 {
            op.fillIdentity(exclusive, count: count, dataType: dataType)
            if bytes > 0 { inclusive.copyMemory(from: state, byteCount: bytes) }
            return nil
        }
        let chosen = algorithm.resolved(bytes: bytes, worldSize: n, configuration: session.configuration)
        // K = 0 stands for recursive doubling in the descriptor (every member must agree on both).
        let k = chosen == .chain ? max(1, blocks ?? ChainScan.defaultBlocks(bytes: bytes, worldSize: n)) : 0
        let descriptor = OperationDescriptor(collective: Collective.allScan.rawValue, dataType: dataType.rawValue,
                                             reduceOp: op.rawValue, count: UInt64(count),
                                             detail: UInt64(decayCount) << 32 | UInt64(k) << 1 | (reverse ? 1 : 0))
        return OperationPlan(descriptor: descriptor, route: chosen == .chain ? .neighbours : .mesh) { links in
            if k == 0 {
                let scan = RecursiveDoublingScan(count: count, dataType: dataType, op: op, decayCount: decayCount, reverse: reverse)
                try scan.run(links: links, state: state, decay: decay, exclusive: exclusive, inclusive: inclusive,
                             scratch: self.scratch.pointer(bytes: scan.scratchBytes))
            } else {
                let scan = ChainScan(count: count, dataType: dataType, op: op, decayCount: decayCount, reverse: reverse, blocks: k)
                try scan.run(links: links, state: state, decay: decay, exclusive: exclusive, inclusive: inclusive)
            }
        }
    }

    /// Barrier: no data; the members' token round (`commitAmongMembers`) is the barrier.
    func barrierPlan(session: PeerSession) -> OperationPlan? {
        if session.topology.members.count == 1 { return nil }
        return OperationPlan(descriptor: OperationDescriptor(collective: Collective.barrier.rawValue, dataType: 0, reduceOp: 0, count: 0),
                             route: .mesh) { _ in }
    }

    /// Copies the memory an operation overwrites aside and returns what puts it back (nil when
    /// nothing needs it). At most two regions: an in-place buffer and a quantized all-reduce's feedback.
    private func preserve(_ regions: [(pointer: UnsafeMutableRawPointer, bytes: Int)]) -> (() -> Void)? {
        let kept = regions.filter { $0.bytes > 0 }
        precondition(kept.count <= 2, "an operation overwrites at most two regions")
        guard !kept.isEmpty else { return nil }
        let first = Self.copyAside(kept[0].pointer, bytes: kept[0].bytes, to: backup.pointer(bytes: kept[0].bytes))
        guard kept.count == 2 else { return first }
        let second = Self.copyAside(kept[1].pointer, bytes: kept[1].bytes, to: feedbackBackup.pointer(bytes: kept[1].bytes))
        return {
            first()
            second()
        }
    }

    private static func copyAside(_ buffer: UnsafeMutableRawPointer, bytes: Int, to saved: UnsafeMutableRawPointer) -> () -> Void {
        saved.copyMemory(from: buffer, byteCount: bytes)
        return { buffer.copyMemory(from: saved, byteCount: bytes) }
    }

    /// The protocol every collective follows: move the data, report the local outcome to the master
    /// (`moveData`), and return the master's verdict (`settle`). On any abort the epoch's links are torn down (no request
    /// can write a caller's buffer afterwards) and the session wants a topology update.
    /// `restore` puts back an input the operation overwrites (in-place buffers); it runs on every
    /// failure. Throws the verdict's abort as `ChorusError.aborted`.
    private func runToVerdict(session: PeerSession, descriptor: OperationDescriptor, route: Route?,
                              restore: (() -> Void)?, dataPhase: (OperationLinks) throws -> Void) throws(ChorusError) {
        try runToVerdict(session: session, opID: session.takeOperationID(),
                         deadline: .now + session.configuration.operationTimeout,
                         descriptor: descriptor, route: route, restore: restore, dataPhase: dataPhase)
    }

    /// `runToVerdict` for an operation that already has its id (a synchronization, after the election).
    func runToVerdict(session: PeerSession, opID: UInt64, deadline: ContinuousClock.Instant,
                      descriptor: OperationDescriptor, route: Route?,
                      restore: (() -> Void)?, dataPhase: (OperationLinks) throws -> Void) throws(ChorusError) {
        let operation = try moveData(session: session, opID: opID, deadline: deadline, descriptor: descriptor,
                                     route: route, restore: restore, dataPhase: dataPhase)
        try settle(operation, session: session)
    }

    /// The first half of an operation: moves its data, commits it among the members when it may
    /// (`commitAmongMembers`: then its verdict is success already), and reports the local outcome
    /// to the master (unless the master's abort came first). A lost master ends an operation that
    /// was not committed here, input restored.
    func moveData(session: PeerSession, opID: UInt64, deadline: ContinuousClock.Instant,
                  descriptor: OperationDescriptor, route: Route?,
                  restore: (() -> Void)?, dataPhase: (OperationLinks) throws -> Void) throws(ChorusError) -> InFlightOperation {
        let operation = InFlightOperation(opID: opID, descriptor: descriptor, deadline: deadline, restore: restore)
        let epoch = session.topology.epoch
        callChain = (epoch, Self.chained(callChain.epoch == epoch ? callChain.value : 0, opID: opID, descriptor))
        let chain = callChain.value
        let amongMembers = descriptor.commitsAmongMembers
        if amongMembers {
            // Members commit without the master, but stay within its window (`maximumUndecided`):
            // the word sent for later goes when its verdicts are due (`flushesCommitted`).
            let window = PeerSession.Machine.maximumUndecided(worldSize: session.topology.members.count)
            session.flushToMasterIfDue(opID: opID, window: window)
            _ = try session.waitFor("the master's verdicts of the operations before \(opID)", deadline: deadline) {
                opID <= session.latestMasterVerdict + window ? true : nil
            }
        }
        var local = Outcome.success, committed = false
        if let route, session.links != nil {
            // The master compares the members' calls as they arrive (a synchronization's digest already
            // told it); see `OperationLinks.owedBegin` for when the links announce this one.
            let begin = descriptor.collective == Collective.synchronize.rawValue
                ? nil : PeerToMaster.begin(epoch: epoch, opID: opID, descriptor: descriptor)
            // Waking a master asleep early pays only when its verdict is on the path. With operations
            // in flight it is busy with their reports, not asleep.
            let masterIdle = !amongMembers && inFlight.isEmpty && ContinuousClock.now - lastVerdictAt > session.configuration.spinWait
            let links = OperationLinks(session: session, route: route, opID: opID, deadline: deadline, begin: begin,
                                       announceRightAway: masterIdle,
                                       announceAfter: amongMembers ? OperationLinks.announceCommittedAmongMembersAfter
                                           : OperationLinks.announceDecidedByTheMasterAfter)
            var pair: PairToken?
            do {
                if amongMembers, links.worldSize == 2 {
                    pair = try PairToken(session: session, dataLinks: links, chain: chain,
                                         words: pairTokenWords.pointer(bytes: 32).assumingMemoryBound(to: UInt64.self))
                }
                try dataPhase(links)
                if amongMembers {
                    committed = pair?.commit() ?? commitAmongMembers(session: session, links: links, opID: opID, chain: chain)
                }
                links.finish()
            } catch {
                links.tearDown()
                switch error as? OperationInterruption {
                case .verdict(let reason): operation.verdict = .aborted(reason)
                case .local(let reason): local = .aborted(reason)
                case .masterLost(let error):
                    session.abandonEpoch()
                    restore?()
                    throw error
                case nil: local = .aborted(.linkFailed(reporter: session.peerID, peer: nil, detail: "\(error)"))
                }
            }
        } else if route != nil {
            // An earlier operation in flight failed here and took the links down: this one aborts
            // as well (the master gives every operation after an abort the same verdict).
            local = .aborted(.linkFailed(reporter: session.peerID, peer: nil, detail: "the epoch's links are gone"))
        }
        if case .aborted(let reason) = local { operation.failedHere = reason }
        if operation.verdict == nil {
            let report = committed ? PeerToMaster.committed(epoch: epoch, opID: opID, descriptor: descriptor)
                : PeerToMaster.report(epoch: epoch, opID: opID, descriptor: descriptor, outcome: local)
            do {
                // Nobody waits for a committed operation's report: it leaves with the next message
                // (in the order sent), at the flush above, or with the next heartbeat.
                try session.sendToMaster(report, later: committed)
            } catch where !committed { // a committed operation succeeded whatever became of the master
                session.abandonEpoch()
                restore?()
                throw error
            } catch {}
        }
        if committed { operation.verdict = .success }
        return operation
    }

    /// The second half: waits for the verdict of an operation whose data has moved. On an abort
    /// the epoch's links are torn down, the session wants a topology update, and the input is
    /// restored. Throws the verdict's abort as `ChorusError.aborted`.
    func settle(_ operation: InFlightOperation, session: PeerSession) throws(ChorusError) {
        let restore = operation.restore
        operation.restore = nil
        var verdict = operation.verdict
        if verdict == nil {
            do {
                verdict = try awaitVerdict(session: session, opID: operation.opID, descriptor: operation.descriptor,
                                           deadline: operation.deadline)
            } catch {
                session.abandonEpoch()
                restore?()
                throw error
            }
        }
        lastVerdictAt = .now
        if verdict == .success, let failure = operation.failedHere {
            // Its partner in a pair committed what this member could not finish (`PairToken`): the
            // master evicts this member when its report arrives, and says so.
            session.abandonEpoch()
            restore?()
            throw awaitEviction(session: session, opID: operation.opID, failure: failure)
        }
        if case .aborted(let reason) = verdict! {
            session.logger.warning("operation \(operation.opID) aborted: \(reason)")
            session.abandonEpoch()
            restore?()
            throw .aborted(reason)
        }
        session.logger.debug("operation \(operation.opID) (\(OperationDescriptor.apiNames(operation.descriptor).map { "\($0.name) \($0.value)" }.joined(separator: ", "))) succeeded")
    }

    /// The master's eviction of a member that failed operation `opID` which its partner committed;
    /// within the bound a lost master's word is waited for (`Configuration.peerTimeout`, at most 3 s).
    private func awaitEviction(session: PeerSession, opID: UInt64, failure: AbortReason) -> ChorusError {
        let bound = ContinuousClock.now + min(session.configuration.peerTimeout, .seconds(3))
        do {
            _ = try session.waitFor("the master's eviction", deadline: bound) { () -> Bool? in nil } // ends at its word
        } catch {
            if case .timedOut = error {} else { return error }
        }
        return .masterUnreachable("operation \(opID) succeeded at the other member, which committed it, but failed here (\(failure)), and the master did not evict this peer within the bound")
    }

    /// The verdict of `opID`. At the deadline this member reports that it timed out, so the master
    /// aborts the operation for everyone with one reason naming the ranks that never called it; if
    /// that verdict does not come either, the local timeout is thrown.
    private func awaitVerdict(session: PeerSession, opID: UInt64, descriptor: OperationDescriptor,
                              deadline: ContinuousClock.Instant) throws(ChorusError) -> Outcome {
        do {
            return try session.waitFor("the verdict of op \(opID)", deadline: deadline) { session.verdict(for: opID) }
        } catch .timedOut(let what) {
            let timedOut = Outcome.aborted(.timedOut(reporter: session.peerID, notArrived: []))
            try session.sendToMaster(.report(epoch: session.topology.epoch, opID: opID, descriptor: descriptor, outcome: timedOut))
            let grace = ContinuousClock.now + min(session.configuration.peerTimeout, .seconds(2))
            guard let verdict = try? session.waitFor("the verdict of op \(opID)", deadline: grace, { session.verdict(for: opID) }) else {
                throw .timedOut(what)
            }
            return verdict
        }
    }
}

/// A grow-only raw allocation reused across collectives (no allocation per call or per chunk).
struct Workspace: ~Copyable {
    private var base: UnsafeMutableRawPointer?
    private var capacity = 0

    mutating func pointer(bytes: Int) -> UnsafeMutableRawPointer {
        if bytes > capacity || base == nil {
            base?.deallocate()
            capacity = max(bytes, 64)
            base = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64)
        }
        return base!
    }

    deinit { base?.deallocate() }
}
