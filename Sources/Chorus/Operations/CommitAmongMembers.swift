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
    /// The collectives that commit among the members: the state synchronization and the link
    /// measurement need the master's election and plan.
    static func commitsAmongMembers(_ descriptor: OperationDescriptor) -> Bool {
        (Collective.allReduce.rawValue ... Collective.allScan.rawValue).contains(descriptor.collective)
    }

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

    /// Steps 1-3 for operation `opID`, whose data phase just succeeded on `links`; true when it is
    /// committed. False leaves the verdict to the master: fenced, the master lost, a member that
    /// did not finish (the round fails or times out; the links are then torn down, so no receive of
    /// the round outlives it), or calls that differ.
    func commitAmongMembers(session: PeerSession, links: OperationLinks, opID: UInt64, chain: UInt64) -> Bool {
        guard session.mayCommitAmongMembers(opID) else { return false }
        do {
            try session.engine.vouch(session.masterConnection, epoch: links.epoch, opID: opID)
        } catch {
            return false
        }
        let round = TokenLinks(OperationLinks(session: session, route: .mesh, opID: opID, deadline: links.deadline,
                                              begin: links.takeOwedBegin(), announceRightAway: false,
                                              announceAfter: OperationLinks.announceCommittedAmongMembersAfter))
        return withUnsafeTemporaryAllocation(of: Int64.self, capacity: 6) { words in
            let token = words.baseAddress!
            token[0] = Int64(bitPattern: chain)
            token[1] = ~token[0]
            do {
                try RecursiveDoublingAllReduce(count: 2, dataType: .int64, op: .max)
                    .run(links: round, input: token, output: token + 2, scratch: token + 4)
                round.links.finish()
            } catch {
                round.links.tearDown()
                return false
            }
            // max(chain) == ~max(~chain) == min(chain): every member's chain is the same.
            guard token[2] == ~token[3] else { return false }
            session.committedAmongMembers(opID)
            return true
        }
    }
}

/// An operation's links for its token round: the tags sit above any a data phase uses, so a frame
/// of one is never taken for the other.
private struct TokenLinks: CollectiveLinks {
    let links: OperationLinks
    private static let tagBase: UInt32 = 1 << 31

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
