import ChorusProtocol
import Testing

/// The shared-state election, its messages, and the master's handling of a synchronization.
@Suite struct StateElectionTests {
    /// Two tensors; the second may differ. `version` picks the first tensor's hash.
    static func digest(revision: UInt64, version: UInt64, strategy: SyncStrategy = .elect, statistics: UInt64 = 0) -> StateDigest {
        StateDigest(revision: revision, strategy: strategy, tensors: [
            TensorDigest(name: "weights", dataType: 1, count: 1000, allowedToDiffer: false, hash: 0xA000 + version),
            TensorDigest(name: "statistics", dataType: 1, count: 10, allowedToDiffer: true, hash: statistics),
        ])
    }

    static func elect(_ digests: [StateDigest], last: UInt64? = nil) -> StateElection.Result {
        StateElection.elect(digests.enumerated().map { (peer: PeerID($0.offset + 1), digest: $0.element) }, lastRevision: last)
    }

    @Test func agreeingPeersAreUpToDate() {
        let digests = (0 ..< 4).map { Self.digest(revision: 5, version: 1, statistics: UInt64($0)) }
        // The statistics differ per peer and are allowed to: nobody is outdated.
        #expect(Self.elect(digests, last: 4) == .upToDate(revision: 5))
    }

    @Test func theMajorityVersionWinsAndOthersReceiveOnlyWhatDiffers() {
        let digests = [Self.digest(revision: 5, version: 2), Self.digest(revision: 5, version: 1),
                       Self.digest(revision: 5, version: 1), Self.digest(revision: 5, version: 3)]
        guard case .transfer(let plan) = Self.elect(digests, last: 4) else { Issue.record("expected a transfer"); return }
        #expect(plan.revision == 5 && plan.hashes == [0xA001, 0])
        #expect(plan.sources == [2, 3])
        #expect(plan.receivers == [.init(id: 1, tensors: [0]), .init(id: 4, tensors: [0])])
    }

    @Test func aTieGoesToTheLowestPeerID() {
        let digests = [Self.digest(revision: 5, version: 2), Self.digest(revision: 5, version: 1),
                       Self.digest(revision: 5, version: 1), Self.digest(revision: 5, version: 2)]
        guard case .transfer(let plan) = Self.elect(digests) else { Issue.record("expected a transfer"); return }
        #expect(plan.hashes[0] == 0xA002 && plan.sources == [1, 4])
    }

    @Test func aPeerThatSkippedAStepIsOutdatedEvenWhenItsVersionIsPopular() {
        // Peers 1 and 2 stayed at revision 4 (they skipped the step); 3 moved to 5. Revision 5 wins.
        let digests = [Self.digest(revision: 4, version: 1), Self.digest(revision: 4, version: 1), Self.digest(revision: 5, version: 2)]
        guard case .transfer(let plan) = Self.elect(digests, last: 4) else { Issue.record("expected a transfer"); return }
        #expect(plan.revision == 5 && plan.sources == [3])
        #expect(plan.receivers == [.init(id: 1, tensors: [0]), .init(id: 2, tensors: [0])])
    }

    @Test func aRevisionThatJumpsAheadIsNotValid() {
        // Peer 3 claims revision 7 after the group synchronized 4: it skipped ahead and is outdated.
        let digests = [Self.digest(revision: 5, version: 1), Self.digest(revision: 5, version: 1), Self.digest(revision: 7, version: 9)]
        guard case .transfer(let plan) = Self.elect(digests, last: 4) else { Issue.record("expected a transfer"); return }
        #expect(plan.revision == 5 && plan.receivers == [.init(id: 3, tensors: [0])])
        // Without a last revision (a fresh master) every revision is valid and the highest wins.
        guard case .transfer(let fresh) = Self.elect(digests) else { Issue.record("expected a transfer"); return }
        #expect(fresh.revision == 7 && fresh.sources == [3])
        // Nobody valid: a precise refusal.
        guard case .rejected(.stateMismatch(let why)) = Self.elect([Self.digest(revision: 9, version: 1)], last: 4) else {
            Issue.record("expected a refusal"); return
        }
        #expect(why.contains("valid revision"))
    }

    @Test func aPeerBehindOnlyInRevisionReceivesNoTensors() {
        let digests = [Self.digest(revision: 5, version: 1), Self.digest(revision: 4, version: 1)]
        guard case .transfer(let plan) = Self.elect(digests, last: 4) else { Issue.record("expected a transfer"); return }
        #expect(plan.receivers == [.init(id: 2, tensors: [])])
    }

    @Test func strategies() {
        // Receive-only peers do not vote, even when they are the majority.
        let joiners = [Self.digest(revision: 5, version: 1), Self.digest(revision: 5, version: 7, strategy: .receiveOnly),
                       Self.digest(revision: 5, version: 7, strategy: .receiveOnly)]
        guard case .transfer(let plan) = Self.elect(joiners) else { Issue.record("expected a transfer"); return }
        #expect(plan.hashes[0] == 0xA001 && plan.sources == [1] && plan.receivers.map(\.id) == [2, 3])
        // A send-only peer that lost the vote fails the synchronization, naming it.
        let outvoted = [Self.digest(revision: 5, version: 1), Self.digest(revision: 5, version: 1),
                        Self.digest(revision: 5, version: 2, strategy: .sendOnly)]
        #expect(Self.elect(outvoted) == .rejected(.stateSenderOutdated(3)))
        // Nobody may send.
        let allReceivers = [Self.digest(revision: 5, version: 1, strategy: .receiveOnly)]
        guard case .rejected(.stateMismatch) = Self.elect(allReceivers) else { Issue.record("expected a refusal"); return }
    }

    @Test func differentTensorsAreRefused() {
        var other = Self.digest(revision: 5, version: 1)
        other.tensors[0].count = 999
        guard case .rejected(.stateMismatch(let why)) = Self.elect([Self.digest(revision: 5, version: 1), other]) else {
            Issue.record("expected a refusal"); return
        }
        #expect(why.contains("'weights'") && why.contains("999"))
    }

    @Test func messagesRoundTripAndRejectTruncation() throws {
        let plan = SyncPlan(revision: 9, hashes: [1, 0, 3], sources: [4, 5], receivers: [.init(id: 6, tensors: [0, 2]), .init(id: 7, tensors: [])])
        let messages: [[UInt8]] = [
            PeerToMaster.syncState(epoch: 3, opID: 4, Self.digest(revision: 8, version: 1, strategy: .sendOnly)).encoded(),
            MasterToPeer.syncPlan(epoch: 3, opID: 4, plan).encoded(),
            PeerToPeer.stateRequest(tensor: 2, offset: 1 << 33, length: 4096, tag: 17).encoded(),
            PeerToPeer.stateDone.encoded(),
        ]
        #expect(try PeerToMaster(decoding: messages[0]) == .syncState(epoch: 3, opID: 4, Self.digest(revision: 8, version: 1, strategy: .sendOnly)))
        #expect(try MasterToPeer(decoding: messages[1]) == .syncPlan(epoch: 3, opID: 4, plan))
        #expect(try PeerToPeer(decoding: messages[2]) == .stateRequest(tensor: 2, offset: 1 << 33, length: 4096, tag: 17))
        #expect(try PeerToPeer(decoding: messages[3]) == .stateDone)
        for reason in [AbortReason.stateMismatch("why"), .stateSenderOutdated(3), .stateTransferFailed(reporter: 2, detail: "lost")] {
            let verdict = MasterToPeer.verdict(epoch: 1, opID: 2, outcome: .aborted(reason))
            #expect(try MasterToPeer(decoding: verdict.encoded()) == verdict)
        }
        for cut in 0 ..< messages[1].count {
            #expect(throws: DecodeError.self) { try MasterToPeer(decoding: Array(messages[1][0 ..< cut])) }
        }
        // A digest claiming more tensors than its bytes can hold is refused by the count check, before
        // anything is reserved (not later, as a truncated tensor).
        var huge = Array(messages[0].prefix(1 + 8 + 8 + 8 + 1))
        huge += [0xFF, 0xFF, 0x00, 0x00]
        #expect(throws: DecodeError("count 65535 runs past the end")) { try PeerToMaster(decoding: huge) }
    }

    // MARK: - The master

    typealias Machine = MasterStateMachine<Int>
    static let address = PeerAddress(host: "127.0.0.1", port: 1)

    private func formed(_ count: Int) -> Machine {
        var m = Machine(group: 7)
        for c in 1 ... count { _ = m.received(.register(listen: Self.address), from: c) }
        _ = m.received(.updateTopology(epoch: m.epoch, minimumWorldSize: 1), from: 1)
        return m
    }

    private func messages(_ actions: [Machine.Action]) -> [Int: MasterToPeer] {
        var result: [Int: MasterToPeer] = [:]
        for case .send(let c, let message) in actions { result[c] = message }
        return result
    }

    @Test func nobodyOutdatedIsDecidedWhenTheLastDigestArrives() {
        var m = formed(3)
        #expect(m.worldSize == 3)
        for c in 1 ... 2 { #expect(m.received(.syncState(epoch: m.epoch, opID: 1, Self.digest(revision: 1, version: 1)), from: c).isEmpty) }
        let last = messages(m.received(.syncState(epoch: m.epoch, opID: 1, Self.digest(revision: 1, version: 1)), from: 3))
        #expect(last.count == 3 && last.values.allSatisfy { $0 == .verdict(epoch: m.epoch, opID: 1, outcome: .success) })
        #expect(m.lastSyncedRevision == 1)
    }

    @Test func aSourceLostDuringTheTransferDoesNotAbortItButTheNextOperation() {
        var m = formed(3)
        let epoch = m.epoch
        _ = m.received(.syncState(epoch: epoch, opID: 1, Self.digest(revision: 1, version: 1)), from: 1)
        _ = m.received(.syncState(epoch: epoch, opID: 1, Self.digest(revision: 1, version: 1)), from: 2)
        let plans = messages(m.received(.syncState(epoch: epoch, opID: 1, Self.digest(revision: 0, version: 5)), from: 3))
        guard case .syncPlan(_, 1, let plan)? = plans[3] else { Issue.record("expected plans: \(plans)"); return }
        #expect(plans.count == 3 && plan.sources == [1, 2] && plan.receivers.map(\.id) == [3])
        #expect(m.connectionClosed(1).isEmpty, "a source lost mid-transfer aborts nothing")
        let descriptor = OperationDescriptor(collective: 7, dataType: 0, reduceOp: 0, count: 2, detail: 1)
        _ = m.received(.report(epoch: epoch, opID: 1, descriptor: descriptor, outcome: .success), from: 2)
        let verdicts = messages(m.received(.report(epoch: epoch, opID: 1, descriptor: descriptor, outcome: .success), from: 3))
        #expect(verdicts == [2: .verdict(epoch: epoch, opID: 1, outcome: .success), 3: .verdict(epoch: epoch, opID: 1, outcome: .success)])
        #expect(m.lastSyncedRevision == 1)
        let next = messages(m.received(.report(epoch: epoch, opID: 2, descriptor: descriptor, outcome: .success), from: 2))
        #expect(next[2] == .verdict(epoch: epoch, opID: 2, outcome: .aborted(.peerLost(1))))
    }

    @Test func aMemberLostBeforeTheElectionAbortsIt() {
        var m = formed(3)
        _ = m.received(.syncState(epoch: m.epoch, opID: 1, Self.digest(revision: 1, version: 1)), from: 1)
        let lost = messages(m.connectionClosed(3))
        #expect(lost[1] == .verdict(epoch: m.epoch, opID: 1, outcome: .aborted(.peerLost(3))))
    }

    @Test func aSynchronizationAgainstAnotherCollectiveIsAMismatch() {
        var m = formed(2)
        _ = m.received(.syncState(epoch: m.epoch, opID: 1, Self.digest(revision: 1, version: 1)), from: 1)
        let descriptor = OperationDescriptor(collective: 1, dataType: 0, reduceOp: 0, count: 2)
        let verdicts = messages(m.received(.report(epoch: m.epoch, opID: 1, descriptor: descriptor, outcome: .success), from: 2))
        #expect(verdicts[1] == .verdict(epoch: m.epoch, opID: 1, outcome: .aborted(.argumentMismatch(
            "operation 1 of epoch \(m.epoch): collective differs: 7(data type 0, operator 0, count 2, detail 0) at rank 0; "
                + "1(data type 0, operator 0, count 2, detail 0) at rank 1"))))
    }
}
