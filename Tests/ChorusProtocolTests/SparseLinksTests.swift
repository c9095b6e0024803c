import ChorusProtocol
import Testing

/// An epoch's mesh is sparse (the members a power of two away in rank); a link outside it is dialed
/// by the one side that needs it and adopted by the other. Peer 2 of eight members (ids 1...8) is
/// rank 1: its partners are ranks 0, 2, 3 and 5 (ids 1, 3, 4 and 6).
@Suite struct SparseLinksTests {
    typealias T = PeerStateMachineTests
    static let members = (1 ... 8).map { T.member(PeerID($0)) }

    @Test func thePatternIsTheMembersAPowerOfTwoAway() {
        #expect(EpochLinks.meshPartners(of: 1, count: 8) == [0, 2, 3, 5])
        #expect(EpochLinks.meshPartners(of: 0, count: 1) == [])
        #expect(EpochLinks.meshPartners(of: 5, count: 6) == [1, 3, 4])
        for n in [2, 3, 7, 64, 256] {
            for r in 0 ..< n {
                let partners = EpochLinks.meshPartners(of: r, count: n)
                // Symmetric (both ends of a pair expect it), within 2·log2(n), and never this rank.
                #expect(partners.allSatisfy { EpochLinks.meshPartners(of: $0, count: n).contains(r) && $0 != r })
                #expect(partners.count <= 2 * (Int.bitWidth - (n - 1).leadingZeroBitCount))
            }
        }
    }

    /// Peer 2 adopted epoch 5 of eight: one lane to peer 3, mesh links to 3, 4 and 6, none to 5, 7, 8.
    static func connected() -> PeerStateMachine {
        let m = T.registered()
        _ = m.received(.topology(Topology(epoch: 5, members: members)))
        let dials = m.adoptOfferedTopology().filter { if case .connectToPeer = $0 { true } else { false } }
        #expect(dials == [.connectToPeer(T.member(3), .ring(lane: 0, lanes: 1)), .connectToPeer(T.member(3), .mesh),
                          .connectToPeer(T.member(4), .mesh), .connectToPeer(T.member(6), .mesh)])
        _ = m.dialed(10, to: T.member(3), for: .ring(lane: 0, lanes: 1))
        _ = m.dialed(11, to: T.member(3), for: .mesh)
        _ = m.dialed(12, to: T.member(4), for: .mesh)
        _ = m.dialed(13, to: T.member(6), for: .mesh)
        _ = m.received(frame: T.hello(from: 1, .ring(lane: 0, lanes: 1)), on: 20, epoch: 5, opID: 0, now: T.start)
        #expect(m.formationStatus == .forming, "the mesh link from peer 1 is missing")
        _ = m.received(frame: T.hello(from: 1, .mesh), on: 21, epoch: 5, opID: 0, now: T.start)
        #expect(m.formationStatus == .connected)
        #expect(m.links == EpochLinks(left: [20], right: [10], mesh: [0: 21, 2: 11, 3: 12, 5: 13]))
        return m
    }

    @Test func anEpochDialsOnlyItsPartnersAfterItAndWaitsOnlyForThoseBefore() {
        _ = Self.connected()
    }

    @Test func aLinkOutsideThePatternIsDialedOnceAndJoinsTheMesh() {
        let m = Self.connected()
        #expect(m.dialMeshLink(to: 2) == [], "rank 2 is a partner")
        #expect(m.dialMeshLink(to: 7) == [.connectToPeer(T.member(8), .mesh)])
        #expect(m.dialed(30, to: T.member(8), for: .mesh) == [.sendToPeer(30, .hello(epoch: 5, from: 2, to: 8, link: .mesh))])
        #expect(m.links?.mesh[7] == 30)
        #expect(m.dialMeshLink(to: 7) == [], "linked now")
        #expect(m.links?.member(on: 30, rank: m.rank, of: m.topology.members) == 8)
        // Closing the epoch's links closes it too.
        #expect(m.closeLinks().contains(.close(30)))
    }

    @Test func aFailedDialIsRecordedForTheOperationAndTheEpochStands() {
        let m = Self.connected()
        _ = m.dialMeshLink(to: 6)
        #expect(m.dialFailed(to: T.member(7), "connection refused") == [], "nothing reported: the operation reports it")
        #expect(m.meshDialFailure(to: 6) == "connection refused")
        #expect(m.formationStatus == .connected && m.links?.mesh[6] == nil)
        #expect(m.dialMeshLink(to: 6) == [.connectToPeer(T.member(7), .mesh)], "asked again, dialed again")
        #expect(m.meshDialFailure(to: 6) == nil)
    }

    /// The other side: a member outside the pattern says hello after the epoch formed (or while
    /// this peer still formed it); its link joins the mesh and carries that operation's requests.
    /// A second link for the same pair is closed.
    @Test func aHelloOutsideThePatternIsAdoptedOnce() {
        let m = Self.connected()
        #expect(m.received(frame: T.hello(from: 7, .mesh), on: 40, epoch: 5, opID: 0, now: T.start) == [.admit(40)])
        #expect(m.links?.mesh[6] == 40)
        #expect(m.received(frame: T.hello(from: 7, .mesh), on: 41, epoch: 5, opID: 0, now: T.start) == [.close(41)])
        #expect(m.received(frame: T.hello(from: 9, .mesh), on: 42, epoch: 5, opID: 0, now: T.start) == [.close(42)], "not a member")
        let request = PeerToPeer.stateRequest(tensor: 1, offset: 0, length: 8, tag: 3)
        _ = m.received(frame: request.encoded(), on: 40, epoch: 5, opID: 2, now: T.start)
        #expect(m.takePeerMessage(opID: 2)?.connection == 40)
    }

    @Test func aHelloOutsideThePatternThatCameWhileTheEpochFormedJoinsItsMesh() {
        let m = T.registered()
        _ = m.received(.topology(Topology(epoch: 5, members: Self.members)))
        _ = m.adoptOfferedTopology()
        #expect(m.received(frame: T.hello(from: 8, .mesh), on: 50, epoch: 5, opID: 0, now: T.start) == [.admit(50)])
        _ = m.dialed(10, to: T.member(3), for: .ring(lane: 0, lanes: 1))
        _ = m.dialed(11, to: T.member(3), for: .mesh)
        _ = m.dialed(12, to: T.member(4), for: .mesh)
        _ = m.dialed(13, to: T.member(6), for: .mesh)
        _ = m.received(frame: T.hello(from: 1, .ring(lane: 0, lanes: 1)), on: 20, epoch: 5, opID: 0, now: T.start)
        _ = m.received(frame: T.hello(from: 1, .mesh), on: 21, epoch: 5, opID: 0, now: T.start)
        #expect(m.formationStatus == .connected && m.links?.mesh[7] == 50)
    }

    /// With a secret the dial joins the mesh only once the acceptor proved itself; its hello goes
    /// right behind this peer's proof.
    @Test func withASecretTheDialJoinsTheMeshAfterTheAcceptorsProof() throws {
        guard let m = try T.registeredWithSecret() else { return }
        _ = m.received(.topology(Topology(epoch: 5, members: Self.members)))
        _ = m.adoptOfferedTopology()
        // Form the epoch: each dial proves itself to its acceptor, then says hello.
        for (connection, member, link) in [(10, 3, LinkKind.ring(lane: 0, lanes: 1)), (11, 3, .mesh), (12, 4, .mesh), (13, 6, .mesh)] {
            var acceptor = AcceptorHandshake(secret: T.secret)
            guard case .sendHandshake(_, let opening)? = m.dialed(ConnectionNumber(connection), to: T.member(PeerID(member)), for: link).first,
                  case .reply(let challenge) = try acceptor.receive(opening),
                  case .sendHandshake(_, let proof)? = m.received(frame: challenge.encoded(), on: ConnectionNumber(connection), epoch: 5, opID: 0, now: T.start).first,
                  case .authenticated(let accepted) = try acceptor.receive(proof) else { Issue.record("dial \(connection)"); return }
            _ = m.received(frame: accepted.encoded(), on: ConnectionNumber(connection), epoch: 5, opID: 0, now: T.start)
        }
        _ = m.received(frame: T.hello(from: 1, .ring(lane: 0, lanes: 1)), on: 20, epoch: 5, opID: 0, now: T.start)
        _ = m.received(frame: T.hello(from: 1, .mesh), on: 21, epoch: 5, opID: 0, now: T.start)
        #expect(m.formationStatus == .connected)
        #expect(m.dialMeshLink(to: 7) == [.connectToPeer(T.member(8), .mesh)])
        var acceptor = AcceptorHandshake(secret: T.secret)
        guard case .sendHandshake(30, let linkOpening)? = m.dialed(30, to: T.member(8), for: .mesh).first,
              case .reply(let linkChallenge) = try acceptor.receive(linkOpening) else { Issue.record("link opening"); return }
        #expect(!m.isInbound(30))
        let answered = m.received(frame: linkChallenge.encoded(), on: 30, epoch: 5, opID: 0, now: T.start)
        guard answered.count == 2, case .sendHandshake(30, let linkProof) = answered[0],
              case .authenticated(let linkAccepted) = try acceptor.receive(linkProof) else { Issue.record("\(answered)"); return }
        #expect(answered[1] == .sendToPeer(30, .hello(epoch: 5, from: 2, to: 8, link: .mesh)))
        #expect(m.links?.mesh[7] == nil, "not before the acceptor's proof")
        #expect(m.received(frame: linkAccepted.encoded(), on: 30, epoch: 5, opID: 0, now: T.start) == [.trust(30)])
        #expect(m.links?.mesh[7] == 30)
    }
}
