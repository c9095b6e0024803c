import ChorusAlgorithms
import ChorusProtocol
import ChorusTransport

/// Success without the master (DESIGN.md): members that all finished an operation's data commit it
/// among themselves, and the master's verdict, which follows from their reports, is off the path.
///
/// Each member, once its data phase succeeded:
/// 1. vouches for the operation on its master connection (`TransportEngine.vouch`): from then on it
///    never reports a failure of it. A master that fenced it first (to abort the operation) makes
///    the vouch fail, and the member leaves the verdict to the master;
/// 2. all-reduces a token over the mesh (recursive doubling, log2 n rounds): the chain of every call
///    of the epoch so far, and its complement, with max. Completing the round means every member's
///    token reached this one, so every member vouched; the chain and its complement agree only when
///    every member made the same calls (a mismatched call is the master's to name);
/// 3. commits: the operation, and every earlier one of the epoch, succeeded.
///
/// Its report still goes to the master, after the round. The master aborts only operations no
/// member can have committed (`MasterStateMachine`, "success without the master").
extension Core {
    /// Folds an operation into the chain of the epoch's calls (the same at every member that made
    /// the same calls in the same order).
    static func chained(_ chain: UInt64, opID: UInt64, _ descriptor: OperationDescriptor) -> UInt64 {
        func mix(_ value: UInt64) -> UInt64 { // SplitMix64's finalizer
            var z = value &+ 0x9E37_79B9_7F4A_7C15
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        let call = UInt64(descriptor.collective) | UInt64(descriptor.dataType) << 8 | UInt64(descriptor.reduceOp) << 16
        return mix(mix(mix(mix(chain ^ opID) ^ call) ^ descriptor.count) ^ descriptor.detail)
    }

    /// A member's token: its chain and the chain's complement, or, from a member that may not
    /// commit, both words the largest value, which matches no chain (max == ~max(~chain) fails).
    static func token(_ chain: UInt64, committable: Bool) -> (Int64, Int64) {
        committable ? (Int64(bitPattern: chain), ~Int64(bitPattern: chain)) : (.max, .max)
    }

    /// Steps 1-3 for operation `opID`, whose data phase just succeeded on `links`; true when it is
    /// committed. False leaves the verdict to the master: fenced, the master lost, a member that
    /// did not finish (the round fails or times out; the links are then torn down, so no receive of
    /// the round outlives it), or calls that differ.
    func commitAmongMembers(session: PeerSession, links: OperationLinks, opID: UInt64, chain: UInt64) -> Bool {
        // A member that may not commit (it lost the master after others began this operation, or
        // was fenced) still takes part in the round, with a token that stops everyone committing:
        // members that skipped the round left the others waiting for it until their deadline.
        let committable = session.mayCommitAmongMembers(opID) && session.vouch(for: opID, epoch: links.epoch)
        let round = TokenLinks(OperationLinks(session: session, route: .mesh, opID: opID, deadline: links.deadline,
                                              begin: links.takeOwedBegin(), announceRightAway: false,
                                              announceAfter: OperationLinks.announceCommittedAmongMembersAfter))
        return withUnsafeTemporaryAllocation(of: Int64.self, capacity: 6) { words in
            let token = words.baseAddress!
            (token[0], token[1]) = Self.token(chain, committable: committable)
            do {
                try RecursiveDoublingAllReduce(count: 2, dataType: .int64, op: .max)
                    .run(links: round, input: token, output: token + 2, scratch: token + 4)
                round.links.finish()
            } catch {
                round.links.tearDown()
                return false
            }
            // max(chain) == ~max(~chain) == min(chain): every member's chain is the same.
            guard committable, token[2] == ~token[3] else { return false }
            session.committedAmongMembers(opID)
            return true
        }
    }
}

/// A group of two commits in one hop (DESIGN.md, "A pair commits in one hop"): each member sends its
/// token ahead of its data, on the data's link, and commits once its own data phase is over, its
/// partner's token came and the two chains agree. It may commit while its partner still lacks its
/// data (a link that failed in one direction): the master then evicts the partner, which reported
/// that failure (`MasterStateMachine`, "a pair"), so no survivor sees another outcome. It must not
/// commit once the master may have taken it for dead (its vouch asks to be in touch): the master
/// then fences only its partner, whose token went out before its vouch. The token round after the
/// data was a second hop and a second write: 2 peers, 4 KiB went from 19.2 to 15.3 µs back to back
/// and from 44.6 to 38.4 µs after a 5 ms gap without it (docs/benchmarks.md).
struct PairToken {
    /// The operation's own links: the token travels with its data.
    private let links: OperationLinks
    private let session: PeerSession
    private let opID: UInt64
    /// This member's token (its chain and the chain's complement), then its partner's: four words
    /// of the communicator's that no other operation uses while this one is under way.
    private let words: UnsafeMutablePointer<UInt64>
    /// False when this member may not commit (see `init`).
    private let committable: Bool
    private let partnersToken: TransportRequest
    private let ownToken: TransportRequest

    /// Posts the partner's token's receive, then this member's token: before any data frame, on
    /// the data's own links (`dataLinks`: the mesh or the ring's lanes, which with two members both
    /// lead to the partner), so the token comes first at both ends and leaves in the data's first
    /// write (or at the first wait, `OperationLinks.heldLink`). A member that may not commit (it lost
    /// the master after its partner began this operation) still sends a token, one that matches no
    /// chain, so its partner does not wait for it until the deadline.
    init(session: PeerSession, dataLinks: OperationLinks, chain: UInt64, words: UnsafeMutablePointer<UInt64>) throws {
        self.session = session
        self.opID = dataLinks.opID
        self.words = words
        committable = session.mayCommitAmongMembers(dataLinks.opID)
        links = dataLinks
        let token = Core.token(chain, committable: committable)
        (words[0], words[1]) = (UInt64(bitPattern: token.0), UInt64(bitPattern: token.1))
        let partner = 1 - links.rank
        partnersToken = try links.receive(into: UnsafeMutableRawBufferPointer(start: words + 2, count: 16), from: partner,
                                          tag: TokenLinks.tagBase)
        do {
            ownToken = try links.send(UnsafeRawBufferPointer(start: words, count: 16), to: partner, tag: TokenLinks.tagBase,
                                      withNextFrame: true)
        } catch {
            links.tearDown() // the partner's token's receive does not outlive the words
            throw error
        }
    }

    /// Commits after the data phase succeeded; false leaves the verdict to the master (the token
    /// did not come, calls that differ, fenced, the master lost). A token that did not come tears
    /// the links down, so its receive does not outlive the operation; the caller finishes them
    /// otherwise. Without a data phase (a barrier) the own token leaves at the wait for the partner's.
    func commit() -> Bool {
        do {
            try links.wait(partnersToken)
            try links.wait(ownToken)
        } catch {
            links.tearDown()
            return false
        }
        // In touch with the master: its partner's token says nothing of the partner's vouch, so the
        // master, which fences only members it still hears, must not have taken this one for dead.
        guard committable, words[2] == words[0], words[3] == words[1], session.mayCommitAmongMembers(opID),
              session.vouch(for: opID, epoch: links.epoch, inTouch: true) else { return false }
        session.committedAmongMembers(opID)
        return true
    }
}

/// An operation's links for its token round: the tags sit above any a data phase uses, so a frame
/// of one is never taken for the other.
private struct TokenLinks: CollectiveLinks {
    let links: OperationLinks
    static let tagBase: UInt32 = 1 << 31

    init(_ links: OperationLinks) { self.links = links }

    var rank: Int { links.rank }
    var worldSize: Int { links.worldSize }

    func send(_ bytes: UnsafeRawBufferPointer, to peer: Int, tag: UInt32) throws -> TransportRequest {
        try links.send(bytes, to: peer, tag: Self.tagBase | tag)
    }

    func receive(into buffer: UnsafeMutableRawBufferPointer, from peer: Int, tag: UInt32) throws -> TransportRequest {
        try links.receive(into: buffer, from: peer, tag: Self.tagBase | tag)
    }

    func wait(_ request: TransportRequest) throws { try links.wait(request) }
}
