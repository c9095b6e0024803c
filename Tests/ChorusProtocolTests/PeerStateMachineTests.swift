import ChorusProtocol
import Testing

/// A peer's control plane without sockets: connections are plain integers, time is an instant the
/// test moves, and the "master" is whatever the test feeds in. These are the orderings the
/// socket tests can only hit by chance (an abort before the last hello, a link that fails before
/// the verdict, a master lost in the middle of an operation).
@Suite struct PeerStateMachineTests {
    struct LinkDown: Error, Hashable, CustomStringConvertible {
        let why: String
        var description: String { why }
    }

    typealias Machine = PeerStateMachine

    static let masterConnection: ConnectionNumber = 1
    static let secret = SharedSecret(Array("correct horse battery staple".utf8))
    static let start = ContinuousClock.now

    static func member(_ id: PeerID) -> Member { Member(id: id, address: PeerAddress(host: "10.0.0.\(id)", port: UInt16(5000 + id))) }
    static let listen = PeerAddress(host: "10.0.0.2", port: 5002)

    static func machine(lanes: Int = 1, secret: SharedSecret? = nil, window: Duration = .seconds(3)) -> Machine {
        Machine(master: masterConnection, listen: listen,
                settings: .init(lanes: lanes, maxQueuedPeerMessages: 4, recoveryWindow: window, connectTimeout: .seconds(10),
                                secret: secret, masterName: "the master at 10.0.0.100:7000"))
    }

    /// A machine registered as peer 2 (no secret).
    static func registered(lanes: Int = 1) -> Machine {
        let m = machine(lanes: lanes)
        #expect(m.start() == [.sendToMaster(masterConnection, .register(listen: listen))])
        _ = m.received(.registered(2, group: 9))
        #expect(m.peerID == 2 && m.unanswered.isEmpty)
        return m
    }

    /// Peer 2 adopts epoch 5 of members 1, 2, 3: it dials peer 3 (ring lane and mesh, connections
    /// 10 and 11) and waits for peer 1's (20 ring, 21 mesh).
    static func forming() -> Machine {
        let m = registered()
        _ = m.received(.topology(Topology(epoch: 5, members: [member(1), member(2), member(3)])))
        #expect(m.hasNewerTopology)
        let asked = m.adoptOfferedTopology()
        #expect(asked.contains(.connectToPeer(member(3), .ring(lane: 0, lanes: 1))))
        #expect(asked.contains(.connectToPeer(member(3), .mesh)))
        #expect(m.rank == 1 && m.formationStatus == .forming && m.needsTopologyUpdate)
        #expect(m.dialed(10, to: member(3), for: .ring(lane: 0, lanes: 1))
            == [.sendToPeer(10, .hello(epoch: 5, from: 2, to: 3, link: .ring(lane: 0, lanes: 1)))])
        #expect(m.dialed(11, to: member(3), for: .mesh) == [.sendToPeer(11, .hello(epoch: 5, from: 2, to: 3, link: .mesh))])
        return m
    }

    static func hello(from: PeerID, _ link: LinkKind, epoch: UInt64 = 5, to: PeerID = 2) -> [UInt8] {
        PeerToPeer.hello(epoch: epoch, from: from, to: to, link: link).encoded()
    }

    /// `forming()` with both of peer 1's links in.
    static func connected() -> Machine {
        let m = forming()
        #expect(m.received(frame: hello(from: 1, .ring(lane: 0, lanes: 1)), on: 20, epoch: 5, opID: 0, now: start) == [.admit(20)])
        #expect(m.received(frame: hello(from: 1, .mesh), on: 21, epoch: 5, opID: 0, now: start) == [.admit(21)])
        return m
    }

    @Test func aMemberWritesItsCommittedReportsWhenVerdictsAreDueNotAtEveryOperation() {
        // 2 members: a window of 32 undecided operations. A member whose last verdict is for
        // operation 100 writes at 117 (more than half the window ahead), not again at 118-125 while
        // the verdict is on its way, again at 126 if it has not come, and not once it has.
        func flushes(_ op: UInt64, latest: UInt64, last: UInt64, n: Int = 2) -> Bool {
            Machine.flushesCommitted(opID: op, latestMasterVerdict: latest, lastFlush: last, window: Machine.maximumUndecided(worldSize: n))
        }
        #expect(Machine.maximumUndecided(worldSize: 2) == 32)
        #expect(!flushes(116, latest: 100, last: 0))
        #expect(flushes(117, latest: 100, last: 0))
        #expect((118 ... 126).filter { flushes($0, latest: 100, last: 117) } == [126])
        #expect(!flushes(127, latest: 116, last: 126))
        #expect(flushes(17, latest: 0, last: 0)) // an epoch's first write, before any verdict
        // 2048 members: a window of 2, a write at every operation past the first undecided one.
        #expect(Machine.maximumUndecided(worldSize: 2048) == 2)
        #expect(flushes(9, latest: 7, last: 8, n: 2048) && !flushes(8, latest: 7, last: 0, n: 2048))
    }

    @Test func anEpochConnectsWhenEveryLinkHasSaidHello() {
        let m = Self.forming()
        _ = m.received(frame: Self.hello(from: 1, .ring(lane: 0, lanes: 1)), on: 20, epoch: 5, opID: 0, now: Self.start)
        #expect(m.formationStatus == .forming, "the mesh link from peer 1 is still missing")
        _ = m.received(frame: Self.hello(from: 1, .mesh), on: 21, epoch: 5, opID: 0, now: Self.start)
        #expect(m.formationStatus == .connected && !m.needsTopologyUpdate)
        #expect(m.links == EpochLinks(left: [20], right: [10], mesh: [0: 21, 2: 11]))
        #expect(m.links?.member(on: 20, rank: m.rank, of: m.topology.members) == 1)
    }

    /// The neighbours' hellos can arrive before this peer has adopted the topology (they were
    /// faster to hear the master): the last of its own dials then connects the epoch.
    @Test func hellosThatCameBeforeTheTopologyCountWhenTheLastDialConnects() {
        let m = Self.registered()
        _ = m.received(.topology(Topology(epoch: 5, members: [Self.member(1), Self.member(2), Self.member(3)])))
        #expect(m.received(frame: Self.hello(from: 1, .ring(lane: 0, lanes: 1)), on: 20, epoch: 5, opID: 0, now: Self.start) == [.admit(20)])
        #expect(m.received(frame: Self.hello(from: 1, .mesh), on: 21, epoch: 5, opID: 0, now: Self.start) == [.admit(21)])
        _ = m.adoptOfferedTopology()
        _ = m.dialed(10, to: Self.member(3), for: .ring(lane: 0, lanes: 1))
        #expect(m.formationStatus == .forming)
        _ = m.dialed(11, to: Self.member(3), for: .mesh)
        #expect(m.formationStatus == .connected && m.links?.left == [20])
    }

    @Test func ringLanesAreOrderedByTheLaneTheirHelloNames() {
        let m = Self.registered(lanes: 2)
        _ = m.received(.topology(Topology(epoch: 3, members: [Self.member(1), Self.member(2)])))
        let asked = m.adoptOfferedTopology()
        #expect(asked.filter { if case .connectToPeer = $0 { true } else { false } }.count == 2, "two lanes to the right, no mesh")
        _ = m.dialed(31, to: Self.member(1), for: .ring(lane: 1, lanes: 2))
        _ = m.dialed(30, to: Self.member(1), for: .ring(lane: 0, lanes: 2))
        _ = m.received(frame: Self.hello(from: 1, .ring(lane: 1, lanes: 2), epoch: 3), on: 41, epoch: 3, opID: 0, now: Self.start)
        _ = m.received(frame: Self.hello(from: 1, .ring(lane: 0, lanes: 2), epoch: 3), on: 40, epoch: 3, opID: 0, now: Self.start)
        _ = m.received(frame: Self.hello(from: 1, .mesh, epoch: 3), on: 42, epoch: 3, opID: 0, now: Self.start)
        #expect(m.formationStatus == .connected)
        #expect(m.links?.left == [40, 41] && m.links?.right == [30, 31] && m.links?.mesh == [0: 42])
    }

    /// The master aborts the epoch's first operation (a member was lost while the ring formed)
    /// before the last hello arrives: the formation fails at once with the master's reason, instead
    /// of waiting out the connect timeout, and what this peer dialed is closed.
    @Test func anAbortBeforeTheLastHelloFailsTheFormationWithTheMastersReason() {
        let m = Self.forming()
        _ = m.received(frame: Self.hello(from: 1, .ring(lane: 0, lanes: 1)), on: 20, epoch: 5, opID: 0, now: Self.start)
        let actions = m.received(frame: MasterToPeer.verdict(epoch: 5, opID: 1, outcome: .aborted(.peerLost(1))).encoded(),
                                 on: Self.masterConnection, epoch: 5, opID: 0, now: Self.start)
        #expect(Set(actions) == [.close(10), .close(11)])
        #expect(m.formationStatus == .failed(.topologyFailed("\(AbortReason.peerLost(1)) while the ring formed")))
        #expect(m.links == nil && m.needsTopologyUpdate)
        // The hello that comes after is only admitted, it connects nothing.
        _ = m.received(frame: Self.hello(from: 1, .mesh), on: 21, epoch: 5, opID: 0, now: Self.start)
        #expect(m.links == nil)
    }

    /// The same abort after the last hello: the ring is kept and the verdict waits for the
    /// epoch's first operation, which then aborts with it.
    @Test func anAbortAfterTheLastHelloKeepsTheRingAndAwaitsTheFirstOperation() {
        let m = Self.connected()
        _ = m.received(.verdict(epoch: 5, opID: 1, outcome: .aborted(.peerLost(3))))
        #expect(m.formationStatus == .connected && m.links != nil)
        #expect(m.takeOperationID() == 1)
        #expect(m.verdict(for: 1) == .aborted(.peerLost(3)))
    }

    /// Operations in flight learn their verdict from any verdict that settles them: the master
    /// decides in order, so a later success means success and an earlier abort is every later one's.
    @Test func aVerdictSettlesTheOperationsInFlightAroundIt() {
        let m = Self.connected()
        #expect(m.verdict(for: 1) == nil)
        _ = m.received(.verdict(epoch: 5, opID: 3, outcome: .success))
        #expect(m.verdict(for: 1) == .success && m.verdict(for: 2) == .success && m.verdict(for: 4) == nil)
        _ = m.received(.verdict(epoch: 5, opID: 6, outcome: .aborted(.peerLost(3))))
        _ = m.received(.verdict(epoch: 5, opID: 7, outcome: .aborted(.peerLost(1)))) // cannot differ; the first counts
        #expect(m.verdict(for: 5) == nil && m.verdict(for: 6) == .aborted(.peerLost(3)))
        #expect(m.verdict(for: 9) == .aborted(.peerLost(3)))
        _ = m.received(.verdict(epoch: 4, opID: 5, outcome: .success)) // an epoch that is over
        #expect(m.verdict(for: 5) == nil)
    }

    /// A link that fails before its operation's verdict: the failure is kept for the operation to
    /// name, and the verdict that follows is still the one every member sees.
    @Test func aLinkClosedBeforeTheVerdictIsKeptAndTheVerdictStillCounts() {
        let m = Self.connected()
        let op = m.takeOperationID()
        #expect(m.send(.begin(epoch: 5, opID: op, descriptor: OperationDescriptor(collective: 1, dataType: 0, reduceOp: 0, count: 4)))
            .count == 1)
        let failed = m.connectionFailed(20, LinkDown(why: "peer closed the connection"), silent: false, now: Self.start)
        #expect(failed == [.log(.notice, "a link of epoch 5 failed: peer closed the connection")])
        #expect(m.linkFailure(20) as? LinkDown == LinkDown(why: "peer closed the connection"))
        #expect(m.connectionFailed(20, LinkDown(why: "no such connection"), silent: false, now: Self.start).isEmpty)
        #expect(m.linkFailure(20) as? LinkDown == LinkDown(why: "peer closed the connection"), "the first cause counts")
        #expect(m.verdict(for: op) == nil)
        _ = m.received(.verdict(epoch: 5, opID: op, outcome: .aborted(.peerLost(1))))
        #expect(m.verdict(for: op) == .aborted(.peerLost(1)))
        #expect(m.unanswered.isEmpty, "the verdict answers the begin")
        #expect(Set(m.abandonEpoch()) == [.close(10), .close(11), .close(20), .close(21)])
        #expect(m.needsTopologyUpdate && m.links == nil && m.linkFailure(20) == nil)
    }

    @Test func aVerdictOfAnEpochThatIsOverIsIgnored() {
        let m = Self.connected()
        _ = m.received(.verdict(epoch: 4, opID: 1, outcome: .success))
        #expect(m.verdict(for: 1) == nil)
    }

    @Test func aFailedDialIsReportedToTheMasterAndFailsTheFormation() {
        let m = Self.registered()
        _ = m.received(.topology(Topology(epoch: 5, members: [Self.member(1), Self.member(2), Self.member(3)])))
        _ = m.adoptOfferedTopology()
        _ = m.dialed(10, to: Self.member(3), for: .ring(lane: 0, lanes: 1))
        let actions = m.dialFailed(to: Self.member(3), "connection refused")
        #expect(actions == [.sendToMaster(Self.masterConnection, .unreachable(epoch: 5, peer: 3, detail: "connection refused")), .close(10)])
        #expect(m.formationStatus == .failed(.topologyFailed("cannot reach peer 3 at 10.0.0.3:5003: connection refused")))
    }

    @Test func aDialedLinkThatFailsBeforeTheRingConnectsFailsTheFormation() {
        let m = Self.forming()
        let actions = m.connectionFailed(11, LinkDown(why: "reset"), silent: false, now: Self.start)
        #expect(actions.contains(.sendToMaster(Self.masterConnection, .unreachable(epoch: 5, peer: 3, detail: "reset"))))
        #expect(actions.contains(.close(10)) && actions.contains(.close(11)))
        #expect(m.formationStatus == .failed(.topologyFailed("the link to peer 3 at 10.0.0.3:5003: reset")))
    }

    @Test func aTimedOutFormationNamesTheMemberWhoseLinksDidNotArrive() {
        let m = Self.forming()
        _ = m.received(frame: Self.hello(from: 1, .ring(lane: 0, lanes: 1)), on: 20, epoch: 5, opID: 0, now: Self.start)
        let actions = m.formationTimedOut()
        #expect(actions.first == .sendToMaster(Self.masterConnection,
                                               .unreachable(epoch: 5, peer: 1, detail: "its links did not arrive within 10.0 seconds")))
        #expect(m.formationStatus == .failed(.topologyFailed("timed out waiting for the neighbours of epoch 5 to connect")))
    }

    /// Each end dials its own number of lanes (a setting, or automatic from measurements): this
    /// peer dials 1 to its right and takes the 3 its left neighbour's hellos name.
    @Test func theLeftNeighboursHellosSayHowManyLanesItDials() {
        let m = Self.forming()
        for lane in [2, 0] as [UInt16] {
            _ = m.received(frame: Self.hello(from: 1, .ring(lane: lane, lanes: 3)), on: 30 + UInt64(lane), epoch: 5, opID: 0, now: Self.start)
        }
        _ = m.received(frame: Self.hello(from: 1, .mesh), on: 40, epoch: 5, opID: 0, now: Self.start)
        #expect(m.formationStatus == .forming, "lane 1 of 3 is missing")
        _ = m.received(frame: Self.hello(from: 1, .ring(lane: 1, lanes: 3)), on: 31, epoch: 5, opID: 0, now: Self.start)
        #expect(m.formationStatus == .connected && m.links?.left == [30, 31, 32] && m.links?.right == [10])
    }

    /// Automatic lanes: the count measured for the right neighbour is dialed; others get one.
    @Test func automaticLanesDialWhatWasMeasuredForTheRightNeighbour() {
        let m = Self.registered(lanes: 0)
        m.automaticLanes = [3: 2, 1: 4]
        _ = m.received(.topology(Topology(epoch: 5, members: [Self.member(1), Self.member(2), Self.member(3)])))
        let asked = m.adoptOfferedTopology()
        #expect(asked.contains(.connectToPeer(Self.member(3), .ring(lane: 1, lanes: 2))))
        #expect(asked.filter { if case .connectToPeer(_, .ring) = $0 { true } else { false } }.count == 2)
    }

    @Test func hellosThatDisagreeOnTheLanesFailTheFormation() {
        for (first, second) in [((0, 2), (1, 3)), ((1, 2), (1, 2)), ((2, 2), (0, 2)), ((0, 0), (0, 1)), ((0, 65), (1, 65))] as [((UInt16, UInt16), (UInt16, UInt16))] {
            let m = Self.forming()
            _ = m.received(frame: Self.hello(from: 1, .ring(lane: first.0, lanes: first.1)), on: 20, epoch: 5, opID: 0, now: Self.start)
            _ = m.received(frame: Self.hello(from: 1, .ring(lane: second.0, lanes: second.1)), on: 21, epoch: 5, opID: 0, now: Self.start)
            guard case .failed(.topologyFailed(let why)) = m.formationStatus else {
                Issue.record("\(first), \(second): \(m.formationStatus)")
                continue
            }
            #expect(why.hasPrefix("left neighbour 1 sent a hello for lane"), "\(why)")
        }
    }

    @Test func aTopologyWithoutThisPeerIsAnEviction() {
        let m = Self.registered()
        _ = m.received(.topology(Topology(epoch: 5, members: [Self.member(1), Self.member(3)])))
        _ = m.adoptOfferedTopology()
        #expect(m.formationStatus == .failed(.evicted("epoch 5 does not include peer 2")))
    }

    @Test func framesThatAreNotForThisPeerCloseTheirConnection() {
        let m = Self.connected()
        #expect(m.received(frame: Self.hello(from: 1, .mesh, to: 7), on: 30, epoch: 5, opID: 0, now: Self.start) == [.close(30)])
        #expect(m.received(frame: Self.hello(from: 1, .mesh, epoch: 4), on: 31, epoch: 4, opID: 0, now: Self.start) == [.close(31)])
        #expect(m.received(frame: [0xFF, 1, 2], on: 32, epoch: 5, opID: 0, now: Self.start) == [.close(32)])
        // A request on a link of this epoch is queued; from an epoch that is over, the link closes.
        let request = PeerToPeer.stateRequest(tensor: 0, offset: 0, length: 8, tag: 1).encoded()
        #expect(m.received(frame: request, on: 21, epoch: 5, opID: 3, now: Self.start).isEmpty)
        #expect(m.received(frame: request, on: 21, epoch: 4, opID: 3, now: Self.start) == [.close(21)])
        #expect(m.takePeerMessage(opID: 3)?.connection == 21)
        #expect(m.takePeerMessage(opID: 3) == nil)
    }

    @Test func queuedPeerMessagesAreBoundedAndOlderOperationsDropped() {
        let m = Self.connected()
        let request = PeerToPeer.stateDone.encoded()
        for op in UInt64(1) ... 4 { #expect(m.received(frame: request, on: 21, epoch: 5, opID: op, now: Self.start).isEmpty) }
        #expect(m.received(frame: request, on: 21, epoch: 5, opID: 5, now: Self.start) == [.close(21)], "a fifth is over the bound")
        #expect(m.takePeerMessage(opID: 3)?.message == .stateDone)
        #expect(m.takePeerMessage(opID: 1) == nil, "taking op 3's dropped ops 1 and 2")
    }

    // MARK: - Master loss

    @Test func aLostMasterIsDialedAgainAndUnansweredMessagesFollowTheResume() {
        let m = Self.connected()
        let lost = m.connectionFailed(Self.masterConnection, LinkDown(why: "reset"), silent: false, now: Self.start)
        #expect(lost.last == .connectToMaster(timeout: .seconds(3)))
        #expect(m.isRecovering)
        let report = PeerToMaster.report(epoch: 5, opID: 1, descriptor: OperationDescriptor(collective: 1, dataType: 0, reduceOp: 0, count: 4),
                                         outcome: .success)
        #expect(m.send(report).isEmpty, "kept, not sent, while no master is reached")
        let rejoin = m.masterDialed(50)
        guard case .sendToMaster(50, .rejoin(let r))? = rejoin.first else { Issue.record("\(rejoin)"); return }
        #expect(r.peer == 2 && r.group == 9 && r.topology.epoch == 5 && !r.leaving)
        let resumed = m.received(frame: MasterToPeer.resumed.encoded(), on: 50, epoch: 5, opID: 0, now: Self.start + .milliseconds(80))
        #expect(resumed.contains(.sendToMaster(50, report)))
        #expect(m.master == 50 && !m.isRecovering)
        // The old connection's late failure event changes nothing.
        #expect(m.connectionFailed(Self.masterConnection, LinkDown(why: "late"), silent: false, now: Self.start).isEmpty)
    }

    @Test func aRefusedDialIsRetriedAndTheWindowsEndLosesTheMaster() {
        let m = Self.machine(window: .milliseconds(200))
        _ = m.start()
        _ = m.received(.registered(2, group: 9))
        _ = m.connectionFailed(Self.masterConnection, LinkDown(why: "reset"), silent: false, now: Self.start)
        #expect(m.masterDialFailed("connection refused", now: Self.start).isEmpty)
        #expect(m.wakeDelay(now: Self.start) == .milliseconds(50))
        #expect(m.tick(now: Self.start + .milliseconds(10)).isEmpty, "not before the redial interval")
        #expect(m.tick(now: Self.start + .milliseconds(60)) == [.connectToMaster(timeout: .milliseconds(140))])
        _ = m.masterDialed(51)
        // The master's kernel accepted, the master said nothing: the window ends.
        let end = m.tick(now: Self.start + .milliseconds(200))
        #expect(end.first == .close(51))
        guard case .masterUnreachable(let why)? = m.masterLoss else { Issue.record("\(String(describing: m.masterLoss))"); return }
        #expect(why.contains("could not resume the session within 0.2 seconds") && why.contains("did not answer"))
    }

    @Test func aMasterThatRejectsTheRejoinEvictsThePeer() {
        let m = Self.registered()
        _ = m.connectionFailed(Self.masterConnection, LinkDown(why: "reset"), silent: false, now: Self.start)
        _ = m.masterDialed(50)
        _ = m.received(frame: MasterToPeer.rejected("peer 2 is not in this master's group").encoded(), on: 50, epoch: 0, opID: 0, now: Self.start)
        #expect(m.masterLoss == .evicted("the master removed this peer: peer 2 is not in this master's group"))
        #expect(m.send(.leave(epoch: 0)).isEmpty, "nothing is sent once the session is over")
        #expect(m.connectionFailed(50, LinkDown(why: "closed"), silent: false, now: Self.start).isEmpty)
        #expect(m.connectionFailed(Self.masterConnection, LinkDown(why: "closed"), silent: false, now: Self.start).isEmpty)
        #expect(!m.isRecovering, "an ended session is not resumed")
    }

    @Test func aMasterLostBeforeRegistrationEndsTheSession() {
        let m = Self.machine()
        _ = m.start()
        _ = m.connectionFailed(Self.masterConnection, LinkDown(why: "reset"), silent: false, now: Self.start)
        #expect(m.masterLoss == .masterUnreachable("connection to the master failed before it registered this peer: reset"))
        #expect(!m.isRecovering)
    }

    /// A master lost while the epoch forms fails the formation with the loss.
    @Test func aMasterLostForGoodWhileTheEpochFormsFailsTheFormation() {
        let m = Self.forming()
        _ = m.received(.rejected("evicted for a partition"))
        #expect(m.formationStatus == .failed(.evicted("the master removed this peer: evicted for a partition")))
    }

    /// Links that go silent while the master is away are reported right behind the rejoin, so a
    /// restarted master need not wait for a member that is stopped.
    @Test func silentLinksDuringRecoveryAreReportedBehindTheRejoin() {
        let m = Self.connected()
        _ = m.connectionFailed(Self.masterConnection, LinkDown(why: "reset"), silent: false, now: Self.start)
        _ = m.connectionFailed(20, LinkDown(why: "idle"), silent: true, now: Self.start)
        _ = m.connectionFailed(10, LinkDown(why: "closed"), silent: false, now: Self.start) // alive: not reported
        let rejoin = m.masterDialed(50)
        #expect(rejoin.count == 2)
        #expect(rejoin.last == .sendToMaster(50, .unreachable(epoch: 5, peer: 1, detail: "its links went silent while the master was away")))
        // One that goes silent after the rejoin follows at once.
        #expect(m.connectionFailed(11, LinkDown(why: "idle"), silent: true, now: Self.start).last
            == .sendToMaster(50, .unreachable(epoch: 5, peer: 3, detail: "its links went silent while the master was away")))
    }

    // MARK: - Authentication

    /// With a secret, nothing but the handshake goes to the master until it proved it holds the
    /// secret; then `register`.
    @Test func theMasterHandshakeComesBeforeTheRegistration() throws {
        let m = Self.machine(secret: Self.secret)
        var master = AcceptorHandshake(secret: Self.secret)
        guard case .sendHandshake(1, let opening)? = m.start().first else { Issue.record("no opening"); return }
        #expect(!m.masterAuthenticated)
        guard case .reply(let challenge) = try master.receive(opening) else { Issue.record("no challenge"); return }
        guard case .sendHandshake(1, let proof)? = m.received(frame: challenge.encoded(), on: 1, epoch: 0, opID: 0, now: Self.start).first else {
            Issue.record("no proof"); return
        }
        guard case .authenticated(let accepted) = try master.receive(proof) else { Issue.record("not accepted"); return }
        #expect(m.received(frame: accepted.encoded(), on: 1, epoch: 0, opID: 0, now: Self.start)
            == [.sendToMaster(1, .register(listen: Self.listen))])
        #expect(m.masterAuthenticated && m.masterLoss == nil)
    }

    @Test func aMasterWithAnotherSecretFailsAuthentication() throws {
        let m = Self.machine(secret: Self.secret)
        var impostor = AcceptorHandshake(secret: SharedSecret(Array("another secret of some length".utf8)))
        guard case .sendHandshake(1, let opening)? = m.start().first,
              case .reply(let challenge) = try impostor.receive(opening) else { Issue.record("no challenge"); return }
        _ = m.received(frame: challenge.encoded(), on: 1, epoch: 0, opID: 0, now: Self.start)
        let forged = Handshake.accepted(proof: [UInt8](repeating: 7, count: 32))
        let actions = m.received(frame: forged.encoded(), on: 1, epoch: 0, opID: 0, now: Self.start)
        guard case .sendHandshake(1, .refused)? = actions.first, case .authenticationFailed? = m.masterLoss else {
            Issue.record("\(actions), \(String(describing: m.masterLoss))"); return
        }
        #expect(!m.masterAuthenticated)
    }

    /// A machine with a secret that proved itself to a master the test plays, registered as peer 2
    /// (nil, with the issue recorded, when the handshake went wrong).
    static func registeredWithSecret() throws -> Machine? {
        let m = machine(secret: secret)
        var master = AcceptorHandshake(secret: secret)
        guard case .sendHandshake(_, let opening)? = m.start().first, case .reply(let challenge) = try master.receive(opening),
              case .sendHandshake(_, let proof)? = m.received(frame: challenge.encoded(), on: 1, epoch: 0, opID: 0, now: start).first,
              case .authenticated(let accepted) = try master.receive(proof) else { Issue.record("master handshake"); return nil }
        _ = m.received(frame: accepted.encoded(), on: 1, epoch: 0, opID: 0, now: start)
        _ = m.received(.registered(2, group: 9))
        return m
    }

    /// A dialed link with a secret: the hello goes right behind the proof, and the link is trusted
    /// once the acceptor proved itself.
    @Test func aDialedLinkSaysHelloRightBehindItsProof() throws {
        guard let m = try Self.registeredWithSecret() else { return }
        _ = m.received(.topology(Topology(epoch: 5, members: [Self.member(2), Self.member(3)])))
        _ = m.adoptOfferedTopology()
        var neighbour = AcceptorHandshake(secret: Self.secret)
        guard case .sendHandshake(10, let linkOpening)? = m.dialed(10, to: Self.member(3), for: .ring(lane: 0, lanes: 1)).first,
              case .reply(let linkChallenge) = try neighbour.receive(linkOpening) else { Issue.record("link opening"); return }
        #expect(!m.isInbound(10), "a dialed link is the machine's, not the gate's")
        let answered = m.received(frame: linkChallenge.encoded(), on: 10, epoch: 5, opID: 0, now: Self.start)
        guard answered.count == 2, case .sendHandshake(10, let linkProof) = answered[0] else { Issue.record("\(answered)"); return }
        #expect(answered[1] == .sendToPeer(10, .hello(epoch: 5, from: 2, to: 3, link: .ring(lane: 0, lanes: 1))))
        guard case .authenticated(let linkAccepted) = try neighbour.receive(linkProof) else { Issue.record("link proof"); return }
        _ = m.dialed(11, to: Self.member(3), for: .mesh)
        #expect(m.received(frame: linkAccepted.encoded(), on: 10, epoch: 5, opID: 0, now: Self.start) == [.trust(10)])
        #expect(m.formationStatus == .forming, "the mesh link's handshake is still open")
    }
}
