/// The master's choice of the shared state every member ends a synchronization with (pure).
///
/// Rules:
/// - every member must describe the same tensors (names, types, counts, allowed-to-differ flags);
/// - voters are the members that are not receive-only;
/// - a revision moves forward by exactly one per synchronization, so a revision above the last
///   synchronized one plus one is not valid (its holder skipped ahead, e.g. a stale checkpoint);
///   lower ones are valid but lose (their holders skipped a step);
/// - among voters at the highest valid revision, the version (hashes of the tensors that may not
///   differ) held by the most peers wins; a tie goes to the version of the longest-standing peer
///   (the lowest id);
/// - a send-only member that does not hold the winner fails the synchronization;
/// - members holding the winner at the winning revision are sources; everyone else receives.
public enum StateElection {
    public enum Result: Hashable, Sendable {
        /// Every member already holds the elected state at the elected revision.
        case upToDate(revision: UInt64)
        case transfer(SyncPlan)
        /// The synchronization cannot succeed; every member gets this reason.
        case rejected(AbortReason)
    }

    /// - Parameters:
    ///   - digests: every member's digest, in ring order.
    ///   - lastRevision: the revision of the group's last successful synchronization, if any.
    public static func elect(_ digests: [(peer: PeerID, digest: StateDigest)], lastRevision: UInt64?) -> Result {
        guard let reference = digests.first else { return .rejected(.stateMismatch("no member described its state")) }
        for (peer, digest) in digests.dropFirst() {
            if let problem = shapeDifference(digest.tensors, reference.digest.tensors) {
                return .rejected(.stateMismatch("peer \(peer) and peer \(reference.peer) hold different tensors: \(problem)"))
            }
        }
        let voters = digests.filter { $0.digest.strategy != .receiveOnly }
        guard !voters.isEmpty else { return .rejected(.stateMismatch("every member is receive-only: nobody can send")) }
        let valid = voters.filter { lastRevision == nil || $0.digest.revision <= lastRevision! + 1 }
        guard let revision = valid.map(\.digest.revision).max() else {
            let held = voters.map { "\($0.peer): \($0.digest.revision)" }.joined(separator: ", ")
            return .rejected(.stateMismatch("no member holds a valid revision (last synchronized \(lastRevision!), "
                                            + "a revision moves by one per synchronize; held: \(held))"))
        }
        // Count the versions at the winning revision; remember each one's lowest holder for ties.
        var holders: [[UInt64]: (count: Int, lowest: PeerID)] = [:]
        for (peer, digest) in valid where digest.revision == revision {
            let version = votingHashes(digest)
            let current = holders[version] ?? (0, peer)
            holders[version] = (current.count + 1, min(current.lowest, peer))
        }
        let elected = holders.max { a, b in
            a.value.count != b.value.count ? a.value.count < b.value.count : a.value.lowest > b.value.lowest
        }!.key
        func holdsElected(_ digest: StateDigest) -> Bool { digest.revision == revision && votingHashes(digest) == elected }

        if let outdatedSender = digests.first(where: { $0.digest.strategy == .sendOnly && !holdsElected($0.digest) }) {
            return .rejected(.stateSenderOutdated(outdatedSender.peer))
        }
        var sources: [PeerID] = [], receivers: [SyncPlan.Receiver] = []
        for (peer, digest) in digests {
            if holdsElected(digest) {
                sources.append(peer)
            } else {
                let differing = digest.tensors.indices.filter { !digest.tensors[$0].allowedToDiffer && digest.tensors[$0].hash != elected[$0] }
                receivers.append(SyncPlan.Receiver(id: peer, tensors: differing.map { UInt32($0) }))
            }
        }
        if receivers.isEmpty { return .upToDate(revision: revision) }
        return .transfer(SyncPlan(revision: revision, hashes: elected, sources: sources, receivers: receivers))
    }

    /// The hashes that take part in the vote (tensors allowed to differ count as 0).
    private static func votingHashes(_ digest: StateDigest) -> [UInt64] {
        digest.tensors.map { $0.allowedToDiffer ? 0 : $0.hash }
    }

    private static func shapeDifference(_ a: [TensorDigest], _ b: [TensorDigest]) -> String? {
        guard a.count == b.count else { return "\(a.count) tensors against \(b.count)" }
        for (x, y) in zip(a, b) where !x.sameShape(as: y) {
            return "'\(x.name)' (type \(x.dataType), \(x.count) elements\(x.allowedToDiffer ? ", may differ" : "")) against "
                + "'\(y.name)' (type \(y.dataType), \(y.count) elements\(y.allowedToDiffer ? ", may differ" : ""))"
        }
        return nil
    }
}
