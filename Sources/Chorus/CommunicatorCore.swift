import ChorusAlgorithms
import ChorusProtocol
#if canImport(Glibc)
import Glibc
#endif

/// Collective kinds, as reported to the master in each operation's descriptor.
enum Collective: UInt8 {
    case allReduce = 1
}

/// What the communicator's lock protects: the session and reusable memory for collectives.
/// Only touched under `Communicator.coreLock`, hence the unchecked Sendable.
final class Core: @unchecked Sendable {
    var session: PeerSession?
    private var scratch = Workspace()
    private var backup = Workspace()

    init(session: PeerSession) { self.session = session }

    func openSession() throws(ChorusError) -> PeerSession {
        guard let session else { throw .invalidArgument("this communicator has left the group") }
        return session
    }

    /// Runs one all-reduce to its verdict. `input == output` means in place.
    func allReduce(input: UnsafeRawPointer?, output: UnsafeMutableRawPointer?, count: Int,
                   dataType: DataType, op: ReduceOp) throws(ChorusError) {
        let session = try openSession()
        if session.needsTopologyUpdate { throw .topologyUpdateRequired }
        let bytes = count * dataType.size
        let worldSize = session.topology.members.count
        if worldSize == 1 || bytes == 0 {
            // Alone, the reduction is the input itself; nothing to agree on.
            if bytes > 0, let input, let output, input != UnsafeRawPointer(output) { memcpy(output, input, bytes) }
            if worldSize == 1 { return }
        }
        let input = input ?? UnsafeRawPointer(scratch.pointer(bytes: 1))
        let output = output ?? scratch.pointer(bytes: 1)
        let inPlace = input == UnsafeRawPointer(output)
        if inPlace && bytes > 0 { memcpy(backup.pointer(bytes: bytes), input, bytes) }
        func restoreInput() {
            if inPlace && bytes > 0 { memcpy(output, backup.pointer(bytes: bytes), bytes) }
        }

        let ring = RingAllReduce(count: count, dataType: dataType, op: op, segmentBytes: session.configuration.segmentBytes)
        let opID = session.takeOperationID()
        let deadline = ContinuousClock.now + session.configuration.operationTimeout
        let descriptor = OperationDescriptor(collective: Collective.allReduce.rawValue, dataType: dataType.rawValue,
                                             reduceOp: op.rawValue, count: UInt64(count))
        let outcome = try runToVerdict(session: session, opID: opID, descriptor: descriptor, deadline: deadline,
                                       onMasterLoss: restoreInput) { links in
            try ring.run(links: links, input: input, output: output,
                         scratch: scratch.pointer(bytes: ring.scratchBytes(worldSize: worldSize)))
        }
        if case .aborted(let reason) = outcome {
            restoreInput()
            throw .aborted(reason)
        }
    }

    /// The protocol every collective follows: move the data, report the local outcome to the master,
    /// and return the master's verdict. On any abort the epoch's links are torn down (no request
    /// can write a caller's buffer afterwards) and the session wants a topology update.
    private func runToVerdict(session: PeerSession, opID: UInt64, descriptor: OperationDescriptor,
                              deadline: ContinuousClock.Instant, onMasterLoss: () -> Void,
                              dataPhase: (OperationLinks) throws -> Void) throws(ChorusError) -> Outcome {
        var local = Outcome.success
        var verdict: Outcome?
        if session.links != nil {
            let links = OperationLinks(session: session, opID: opID, deadline: deadline)
            do {
                try dataPhase(links)
                links.finish()
            } catch {
                links.tearDown()
                switch error as? OperationInterruption {
                case .verdict(let reason): verdict = .aborted(reason)
                case .local(let reason): local = .aborted(reason)
                case .masterLost(let error):
                    abandonEpoch(session)
                    onMasterLoss()
                    throw error
                case nil: local = .aborted(.linkFailed(reporter: session.peerID, detail: "\(error)"))
                }
            }
        }
        do {
            if verdict == nil {
                try session.sendToMaster(.report(epoch: session.topology.epoch, opID: opID, descriptor: descriptor, outcome: local))
                verdict = try session.waitFor("the verdict of op \(opID)", deadline: deadline) { session.verdict(for: opID) }
            }
        } catch {
            abandonEpoch(session)
            onMasterLoss()
            throw error
        }
        if case .aborted = verdict! { abandonEpoch(session) }
        return verdict!
    }

    private func abandonEpoch(_ session: PeerSession) {
        session.closeLinks()
        session.needsTopologyUpdate = true
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
