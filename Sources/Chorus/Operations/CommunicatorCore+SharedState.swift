import ChorusAlgorithms
import ChorusProtocol

extension Core {
    /// Shared-state synchronization: send the digest, let the master elect, then move the state as
    /// planned and report, like any collective. When nobody is outdated the master's answer is the
    /// verdict itself (one round trip).
    func synchronize(_ state: SharedState, strategy: SyncStrategy,
                     progress: ((SyncProgress) -> Void)?) throws(ChorusError) -> SyncResult {
        let session = try readySession()
        let digest = state.digest(strategy: strategy)
        let opID = session.takeOperationID()
        let deadline = ContinuousClock.now + session.configuration.operationTimeout
        enum Answer { case verdict(Outcome), plan(SyncPlan) }
        let answer: Answer
        do {
            try session.sendToMaster(.syncState(epoch: session.topology.epoch, opID: opID, digest))
            answer = try session.waitFor("the master's election for op \(opID)", deadline: deadline) { () -> Answer? in
                if let verdict = session.verdict(for: opID) { return .verdict(verdict) }
                return session.syncPlan(for: opID).map { .plan($0) }
            }
        } catch {
            session.abandonEpoch()
            throw error
        }
        let plan: SyncPlan
        switch answer {
        case .verdict(.success):
            session.lastSyncedRevision = state.revision
            return SyncResult(revision: state.revision, wasOutdated: false, receivedTensors: [], bytesReceived: 0, bytesSent: 0, sources: [],
                              lostSources: [])
        case .verdict(.aborted(let reason)):
            session.abandonEpoch()
            throw .aborted(reason)
        case .plan(let p):
            plan = p
        }
        guard plan.hashes.count == state.tensors.count else {
            session.abandonEpoch()
            throw .invalidArgument("the master's plan names \(plan.hashes.count) tensors, this state holds \(state.tensors.count)")
        }
        let members = session.topology.members.map(\.id)
        let rankOf = Dictionary(uniqueKeysWithValues: members.enumerated().map { ($0.element, $0.offset) })
        let sources = plan.sources.compactMap { rankOf[$0] }
        let mine = plan.receivers.first { $0.id == session.peerID }
        let received = (mine?.tensors ?? []).filter { Int($0) < state.tensors.count }
            .map { (index: $0, tensor: state.tensors[Int($0)], electedHash: plan.hashes[Int($0)]) }
        let descriptor = OperationDescriptor(collective: Collective.synchronize.rawValue, dataType: 0, reduceOp: 0,
                                             count: UInt64(state.tensors.count), detail: plan.revision)
        var lost: [Int] = [], sent = 0
        try runToVerdict(session: session, opID: opID, deadline: deadline, descriptor: descriptor, route: .mesh,
                         restore: nil) { links in
            if mine != nil {
                lost = try receive(received, from: sources, links: links, progress: progress)
            } else {
                var receivers: [Int: Set<UInt32>] = [:]
                for receiver in plan.receivers { if let rank = rankOf[receiver.id] { receivers[rank] = Set(receiver.tensors) } }
                sent = try StateSource(tensors: state.tensors.map { UnsafeRawBufferPointer(start: $0.base, count: $0.byteCount) },
                                       receivers: receivers).run(links: links)
            }
        }
        state.revision = plan.revision
        session.lastSyncedRevision = plan.revision
        return SyncResult(revision: plan.revision, wasOutdated: mine != nil, receivedTensors: received.map(\.tensor.name),
                          bytesReceived: received.reduce(0) { $0 + $1.tensor.byteCount }, bytesSent: sent, sources: plan.sources,
                          lostSources: lost.map { members[$0] })
    }

    /// An outdated member pulls `tensors` from the sources, then checks every one against its
    /// elected hash. Returns the ranks of the sources lost on the way.
    private func receive(_ tensors: [(index: UInt32, tensor: SharedTensor, electedHash: UInt64)], from sources: [Int],
                         links: OperationLinks, progress: ((SyncProgress) -> Void)?) throws -> [Int] {
        let configuration = links.session.configuration
        let receiver = StateReceiver(
            tensors: tensors.map { ($0.index, UnsafeMutableRawBufferPointer(start: $0.tensor.base, count: $0.tensor.byteCount)) },
            sources: sources, chunkBytes: configuration.syncChunkBytes, chunksInFlight: configuration.syncChunksInFlight,
            progress: progress.map { report in { report(SyncProgress(bytesReceived: $0, bytesTotal: $1)) } })
        let reporter = links.session.peerID
        let lost: [Int]
        do {
            lost = try receiver.run(links: links)
        } catch let error as StateTransferError {
            throw OperationInterruption.local(.stateTransferFailed(reporter: reporter, detail: error.description))
        }
        for (_, tensor, electedHash) in tensors where tensor.hash != electedHash {
            throw OperationInterruption.local(.stateTransferFailed(
                reporter: reporter, detail: "tensor '\(tensor.name)' hashes to \(tensor.hash) after the transfer, not the elected \(electedHash)"))
        }
        return lost
    }
}
