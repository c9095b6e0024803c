import ChorusAlgorithms
import ChorusProtocol
import ChorusTransport

/// Why an operation stopped before its data phase finished.
enum OperationInterruption: Error {
    /// The master's verdict (abort) arrived while we were still moving data.
    case verdict(AbortReason)
    /// A link failed or the operation deadline passed: this peer reports it as the reason.
    case local(AbortReason)
    /// The master connection died, or the master dropped this peer.
    case masterLost(ChorusError)
}

/// Which of an epoch's connections an algorithm talks over.
enum Route {
    /// Ring lanes: send to the right neighbour, receive from the left one.
    case ring
    /// Ring lanes both ways: to and from either neighbour (the chain scan, forward and reverse).
    case neighbours
    /// The mesh: one connection per pair of members, both ways.
    case mesh
    /// The mesh, where both members of a pair outside the epoch's pattern need their link at once
    /// (`LinkMeasurement`): the lower rank dials it, the higher waits for its hello (both dialing
    /// would leave each end closing the other's link as a second one).
    case everyPair
}

/// The links of the current epoch, bound to one operation: every frame carries its epoch and op id,
/// and every wait also watches the master for an early abort verdict.
final class OperationLinks: CollectiveLinks {
    typealias Request = TransportRequest

    let rank: Int
    let worldSize: Int
    let session: PeerSession
    /// The links when the operation began (ring lanes; the mesh can grow, see `meshLink`).
    let links: EpochLinks
    private let route: Route
    let epoch: UInt64
    let opID: UInt64
    let deadline: ContinuousClock.Instant
    private var outstanding: [(request: TransportRequest, link: ConnectionNumber)] = []
    /// The link whose last frame waits for its next one (`send(withNextFrame: true)`, a pair's
    /// token): it leaves with the next frame sent on that link or at this operation's first wait,
    /// whichever comes first, so a member that only receives (a broadcast's other end, a chain's
    /// last) does not keep its partner waiting a hop for it.
    private var heldLink: ConnectionNumber?
    /// What this member tells the master while its data moves (its call, so a mismatch stops at once
    /// instead of everyone waiting for data that never comes), until it is sent:
    /// - `announceRightAway` (the master has likely gone to sleep since the last verdict): right
    ///   behind the first posted frame, so the master's wake-up overlaps the data instead of
    ///   delaying the verdict;
    /// - otherwise (back to back, the master still spinning): only when a wait is still waiting
    ///   `announceAfter` into the operation, or a link fails. A small collective is done sooner and
    ///   says its call in its report, which carries the same descriptor: half the messages at the
    ///   master (2 peers, 4 KiB back to back: 143 -> 117 µs; DESIGN.md "Threading").
    private var owedBegin: PeerToMaster?
    private let announceRightAway: Bool
    private let announceAfter: Duration
    private let started = ContinuousClock.now
    /// When a collective the master decides announces itself if its data is still moving: a
    /// mismatched or missing call is still named within milliseconds.
    static let announceDecidedByTheMasterAfter: Duration = .milliseconds(1)
    /// ...and one the members commit among themselves (`commitAmongMembers`): the master's verdict
    /// is off its path, and a mismatched call that does not stall the data is caught by the token
    /// round, so the `begin` only names a call that stalls it. Sooner, every member of a large
    /// group would announce every collective (at 32 members each takes over a millisecond), most
    /// of the master's work (`chorus-scale`, 128 members: 4.3 -> 2.1 ms of its CPU per collective).
    static let announceCommittedAmongMembersAfter: Duration = .milliseconds(100)

    /// `begin`: the message announcing this member's call to the master (nil: already announced).
    init(session: PeerSession, route: Route, opID: UInt64, deadline: ContinuousClock.Instant, begin: PeerToMaster?,
         announceRightAway: Bool, announceAfter: Duration) {
        self.announceRightAway = announceRightAway
        self.announceAfter = announceAfter
        precondition(session.links != nil, "an operation needs links")
        self.session = session
        self.rank = session.rank
        self.worldSize = session.topology.members.count
        self.links = session.links!
        self.route = route
        self.epoch = session.topology.epoch
        self.opID = opID
        self.deadline = deadline
        self.owedBegin = begin
        outstanding.reserveCapacity(4) // a pair's token and data, both ways: one allocation
    }

    /// Sends the owed `begin`, once (a state transfer announces before its first wait).
    func announce() throws {
        guard let message = owedBegin else { return }
        owedBegin = nil
        do {
            try session.sendToMaster(message)
        } catch {
            throw OperationInterruption.masterLost(error)
        }
    }

    private func connection(to peer: Int, tag: UInt32, sending: Bool) throws -> ConnectionNumber {
        let right = (rank + 1) % worldSize, left = (rank + worldSize - 1) % worldSize
        func lane(_ side: [ConnectionNumber]) -> ConnectionNumber { side[Int(tag) % side.count] }
        switch route {
        case .ring:
            precondition(peer == (sending ? right : left), "ring algorithms send right and receive left")
            return lane(sending ? links.right : links.left)
        case .neighbours:
            // A send looks right first and a receive left first: with two members both neighbours
            // are one member, and one end's right lanes are the other end's left ones.
            let (first, second) = sending ? ((right, links.right), (left, links.left)) : ((left, links.left), (right, links.right))
            if peer == first.0 { return lane(first.1) }
            precondition(peer == second.0, "the chain reaches the ring neighbours only")
            return lane(second.1)
        case .mesh:
            return try meshLink(to: peer)
        case .everyPair:
            return try meshLink(to: peer, dialing: rank < peer)
        }
    }

    /// The mesh link to `peer`, dialed now if the epoch's pattern left it out (see `EpochLinks`), or
    /// (not `dialing`) waited for until `peer` dials it.
    func meshLink(to peer: Int, dialing: Bool = true) throws -> ConnectionNumber {
        if let link = session.links?.mesh[peer] { return link }
        if dialing { session.dialMeshLink(to: peer) }
        let link = try session.wait(until: deadline) { () throws(OperationInterruption) -> ConnectionNumber? in
            if let link = session.links?.mesh[peer] { return link }
            if let failure = session.meshDialFailure(to: peer) {
                throw .local(.linkFailed(reporter: session.peerID, peer: session.topology.members[peer].id, detail: "mesh link: \(failure)"))
            }
            if case .aborted(let reason)? = session.verdict(for: opID) { throw .verdict(reason) }
            if let error = session.masterLossError { throw .masterLost(error) }
            if session.links == nil { throw .local(.linkFailed(reporter: session.peerID, peer: nil, detail: "the epoch's links are gone")) }
            return nil
        }
        guard let link else { throw OperationInterruption.local(.timedOut(reporter: session.peerID, notArrived: [])) }
        return link
    }

    func send(_ bytes: UnsafeRawBufferPointer, to peer: Int, tag: UInt32) throws -> TransportRequest {
        try send(bytes, to: peer, tag: tag, withNextFrame: false)
    }

    /// `withNextFrame`: the frame leaves with the link's next one, or at `flush` (see
    /// `TransportEngine.postSend`).
    func send(_ bytes: UnsafeRawBufferPointer, to peer: Int, tag: UInt32, withNextFrame: Bool) throws -> TransportRequest {
        let link = try connection(to: peer, tag: tag, sending: true)
        let request = try track(link) { () throws(TransportError) in
            try session.engine.postSend(ConnectionID(rawValue: link), address: FrameAddress(epoch: epoch, opID: opID, tag: tag),
                                        bytes: bytes, withNextFrame: withNextFrame)
        }
        if withNextFrame { heldLink = link } else if link == heldLink { heldLink = nil }
        if announceRightAway { try announce() }
        return request
    }

    func receive(into buffer: UnsafeMutableRawBufferPointer, from peer: Int, tag: UInt32) throws -> TransportRequest {
        let link = try connection(to: peer, tag: tag, sending: false)
        return try track(link) { () throws(TransportError) in
            try session.engine.postReceive(ConnectionID(rawValue: link), address: FrameAddress(epoch: epoch, opID: opID, tag: tag), into: buffer)
        }
    }

    private func track(_ link: ConnectionNumber, _ post: () throws(TransportError) -> TransportRequest) throws -> TransportRequest {
        do {
            let request = try post()
            outstanding.append((request, link))
            return request
        } catch {
            throw linkInterruption(link, error)
        }
    }

    /// What to throw for a failed link. A link the peer closed is usually the effect of a cause the
    /// master hears about at once (that peer crashed, or it saw a mismatched frame and reported it),
    /// and a frame of another shape is the effect of a neighbour's different call, which the master
    /// names precisely from the members' `begin`s (each sent right behind its first frame); so wait
    /// briefly for the master's verdict before reporting the effect: the verdict then names the
    /// cause, the same at every member, whichever report would have reached the master first.
    func linkInterruption(_ link: ConnectionNumber, _ error: TransportError) -> OperationInterruption {
        try? announce() // the master names a mismatch from the members' calls: this one's too
        session.drainEvents() // the link's failure event carries its cause (a post only sees "no such connection")
        let reason = linkFailure(link, error)
        let effects: [TransportError.Code] = [.peerClosed, .noSuchConnection, .opMismatch, .tagMismatch, .lengthMismatch]
        guard effects.contains((session.linkFailure(link) ?? error).code) else { return .local(reason) }
        let graceEnd = min(deadline, .now + session.configuration.linkFailureGrace)
        // The verdict usually came in with the failure itself, so it is looked at before waiting.
        return session.wait(until: graceEnd) { () -> OperationInterruption? in
            if case .aborted(let verdict)? = session.verdict(for: opID) { return .verdict(verdict) }
            return session.masterLossError.map { .masterLost($0) }
        } ?? .local(reason)
    }

    func linkFailure(_ link: ConnectionNumber, _ error: TransportError) -> AbortReason {
        let cause = session.linkFailure(link) ?? error
        let side = links.left.contains(link) ? "left" : (links.right.contains(link) ? "right" : "mesh")
        switch cause.code {
        case .opMismatch, .tagMismatch, .lengthMismatch:
            // A healthy neighbour sent frames of another shape: the peers disagree on the call.
            return .argumentMismatch("rank \(rank) (peer \(session.peerID)) received, on its \(side) link, a frame its call does not expect: \(cause)")
        default:
            return .linkFailed(reporter: session.peerID, peer: peer(on: link), detail: "\(side) link: \(cause)")
        }
    }

    /// The member at the other end of one of this epoch's links.
    private func peer(on link: ConnectionNumber) -> PeerID? {
        (session.links ?? links).member(on: link, rank: rank, of: session.topology.members)
    }

    func wait(_ request: TransportRequest) throws {
        if let held = heldLink {
            heldLink = nil
            session.engine.flush(ConnectionID(rawValue: held))
        }
        var outcome: RequestWait?
        if announceRightAway { try announce() }
        if owedBegin != nil {
            outcome = try wait(request, until: min(deadline, started + announceAfter))
            if outcome == nil { try announce() }
        }
        if outcome == nil { outcome = try wait(request, until: deadline) }
        switch outcome {
        case .completed?:
            return
        case .failed(let error)?:
            let link = outstanding.first { $0.request === request }?.link ?? links.right[0]
            throw linkInterruption(link, error)
        default:
            throw OperationInterruption.local(.timedOut(reporter: session.peerID, notArrived: []))
        }
    }

    /// Waits for `request` until `end`, watching the master's verdict and the master connection.
    private func wait(_ request: TransportRequest, until end: ContinuousClock.Instant) throws(OperationInterruption) -> RequestWait? {
        try session.wait(until: end, blockingOn: request) { () throws(OperationInterruption) -> RequestWait? in
            // Done already (a send written inline, a frame read with the one before): the verdict's
            // look and the engine's wait would only cost an idle gap's cold cache (DESIGN "Threading").
            if let outcome = session.engine.outcomeIfFinished(request) { return outcome }
            if case .aborted(let reason)? = session.verdict(for: opID) { throw .verdict(reason) }
            if let error = session.masterLossError { throw .masterLost(error) }
            return nil
        }
    }

    /// Closes the links and waits until no request can touch a caller's buffer any more.
    func tearDown() {
        session.closeLinks()
        for (request, _) in outstanding where !request.isFinished {
            // Closing cancels every request promptly; the bound is a backstop.
            _ = session.engine.wait(request, timeout: .seconds(30), interruptible: false)
            precondition(request.isFinished, "a cancelled request did not finish")
        }
        outstanding = []
    }

    /// The `begin` not sent yet, handed to the links of the operation's token round
    /// (`commitAmongMembers`), whose waits then announce the call as these would have.
    func takeOwedBegin() -> PeerToMaster? {
        defer { owedBegin = nil }
        return owedBegin
    }

    /// Forgets finished requests (after a successful run every request has finished) and the owed
    /// `begin`: the report that follows carries the call.
    func finish() {
        precondition(outstanding.allSatisfy { $0.request.isFinished })
        outstanding = []
        owedBegin = nil
    }
}
