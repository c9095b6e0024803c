/// Forming an epoch's links: on a new topology this peer dials the lanes to its right neighbour and
/// the mesh links to its partners after it (`EpochLinks.meshPartners`: the members a power of two
/// away), and waits for the left neighbour's lanes and the mesh links from its partners before it,
/// each inbound link identified by its hello. With a secret, a dialed link sends its hello right
/// behind its proof; nothing else may arrive on it before the ring connects.
extension PeerStateMachine {
    public enum FormationStatus: Hashable, Sendable {
        case forming
        case connected
        case failed(Failure)
    }

    /// The epoch being formed.
    struct Formation: Sendable {
        let epoch: UInt64
        let left: Member
        /// Mesh partners before this one, by id, with their ranks: their links come in.
        let earlier: [PeerID: Int]
        /// The lanes and mesh links this peer dials.
        let dialCount: Int
        var dials: [ConnectionNumber: Dial] = [:]
        /// The first member whose links have not arrived.
        var missing: PeerID?
    }

    /// A link this peer dialed while its epoch forms.
    struct Dial: Sendable {
        let member: Member
        let link: LinkKind
        let hello: PeerToPeer
        /// Nil without a secret (the hello went at once).
        var handshake: ConnectorHandshake?
        /// The acceptor proved it holds the secret (with a secret: until then nothing else counts).
        var authenticated = false
        /// Why the link failed before the ring was connected.
        var failure: String?
        var refusedAuthentication = false
    }

    /// Adopts the newest offered topology: closes the old links and asks for this epoch's dials
    /// (`connectToPeer`). Fails (`formationStatus`) when the topology leaves this peer out.
    public func adoptOfferedTopology() -> [Action] {
        guard let next = offeredTopology, next.epoch > topology.epoch else { return [] }
        var actions = closeLinks()
        topology = next
        verdicts = [:]
        firstAbort = nil
        latestSuccess = 0
        latestMasterVerdict = 0
        lastCommittedFlush = 0
        committableFrom = 1
        syncPlans = [:]
        peerMessages = []
        nextOpID = 1
        formationStatus = .forming
        guard let index = next.members.firstIndex(where: { $0.id == peerID }) else {
            return actions + failFormation(.evicted("epoch \(next.epoch) does not include peer \(peerID)"))
        }
        rank = index
        actions.append(.log(.info, "epoch \(next.epoch): rank \(index) of \(next.members.count)"))
        for (connection, hello) in hellos where hello.epoch < next.epoch {
            actions.append(.close(connection))
            hellos[connection] = nil
        }
        let n = next.members.count
        guard n > 1 else {
            needsTopologyUpdate = false
            formationStatus = .connected
            return actions
        }
        needsTopologyUpdate = true // until the ring is connected
        let right = next.members[(index + 1) % n], left = next.members[(index + n - 1) % n]
        let partners = EpochLinks.meshPartners(of: index, count: n)
        let later = partners.filter { $0 > index }
        let lanes = settings.lanes > 0 ? settings.lanes : automaticLanes[right.id] ?? 1
        formation = Formation(epoch: next.epoch, left: left,
                              earlier: Dictionary(uniqueKeysWithValues: partners.filter { $0 < index }.map { (next.members[$0].id, $0) }),
                              dialCount: lanes + later.count)
        for lane in 0 ..< lanes { actions.append(.connectToPeer(right, .ring(lane: UInt16(lane), lanes: UInt16(lanes)))) }
        for j in later { actions.append(.connectToPeer(next.members[j], .mesh)) }
        return actions
    }

    /// The dial of `member` for `link` connected: it opens the handshake, or says hello at once.
    public func dialed(_ connection: ConnectionNumber, to member: Member, for link: LinkKind) -> [Action] {
        let hello = PeerToPeer.hello(epoch: topology.epoch, from: peerID, to: member.id, link: link)
        let dial = Dial(member: member, link: link, hello: hello, handshake: settings.secret.map(ConnectorHandshake.init))
        let first: Action = dial.handshake.map { .sendHandshake(connection, $0.opening) } ?? .sendToPeer(connection, hello)
        guard formation != nil else { return onDemandDialed(connection, dial, first) }
        formation?.dials[connection] = dial
        // The neighbours' hellos may all be in already (they came while this peer was still busy).
        return [first] + evaluateFormation()
    }

    /// The dial of `member` failed: the epoch cannot form, and the master hears which pair.
    public func dialFailed(to member: Member, _ detail: String) -> [Action] {
        guard formation != nil else { return onDemandDialFailed(to: member, detail) }
        return reportUnreachable(member.id, detail) + failFormation(.topologyFailed("cannot reach peer \(member.id) at \(member.address): \(detail)"))
    }

    /// The wait for the epoch's links is over (`Settings.connectTimeout`): the first member whose
    /// links are missing is reported.
    public func formationTimedOut() -> [Action] {
        guard let current = formation else { return [] }
        let report = current.missing.map { reportUnreachable($0, "its links did not arrive within \(settings.connectTimeout)") } ?? []
        return report + failFormation(.topologyFailed("timed out waiting for the neighbours of epoch \(current.epoch) to connect"))
    }

    /// Answers the handshake on a link this peer dialed, then sends its hello; any other frame before
    /// the ring is connected fails the dial.
    func continueDial(_ connection: ConnectionNumber, _ payload: [UInt8]) -> [Action] {
        guard var dial = formation?.dials[connection], dial.failure == nil else { return [] }
        let actions = dial.takeHandshake(payload, on: connection)
        formation?.dials[connection] = dial
        return actions + evaluateFormation()
    }

    /// Looks at the epoch being formed after something changed: fails it on a failed dial, a left
    /// neighbour's hellos that disagree on its number of lanes, or the master's abort of the epoch's first operation
    /// (a member lost while the ring forms never dials); connects it when every link is in.
    func evaluateFormation() -> [Action] {
        guard var current = formation else { return [] }
        if let dial = current.dials.values.first(where: { $0.failure != nil }) {
            let what = "peer \(dial.member.id) at \(dial.member.address): \(dial.failure!)"
            if dial.refusedAuthentication { return failFormation(.authenticationFailed(what)) }
            return reportUnreachable(dial.member.id, dial.failure!) + failFormation(.topologyFailed("the link to \(what)"))
        }
        // The left neighbour chose how many lanes it dials (its setting, or what its measurements
        // gave): every hello of it names the same count, and each lane once.
        var leftLanes: [(Int, ConnectionNumber)] = [], meshIn: [Int: ConnectionNumber] = [:]
        var leftLaneCount: Int?
        for (connection, hello) in hellos where hello.epoch == current.epoch {
            switch hello.link {
            case .ring(let lane, let theirLanes) where hello.from == current.left.id:
                let count = Int(theirLanes)
                guard (1 ... Self.maximumLanes).contains(count), Int(lane) < count, leftLaneCount.map({ $0 == count }) ?? true,
                      !leftLanes.contains(where: { $0.0 == Int(lane) }) else {
                    return failFormation(.topologyFailed("left neighbour \(current.left.id) sent a hello for lane \(lane) of \(theirLanes) "
                                                         + "after \(leftLanes.count) of \(leftLaneCount.map(String.init) ?? "none")"))
                }
                leftLaneCount = count
                leftLanes.append((Int(lane), connection))
            case .mesh:
                if let rank = current.earlier[hello.from] { meshIn[rank] = connection }
            default:
                break
            }
        }
        let leftConnected = leftLanes.count == leftLaneCount
        let ownHellosSent = current.dials.values.allSatisfy { $0.handshake == nil || $0.authenticated }
        let dialsDone = current.dials.count == current.dialCount
        current.missing = !leftConnected ? current.left.id : current.earlier.first { meshIn[$0.value] == nil }?.key
        formation = current
        guard leftConnected, meshIn.count == current.earlier.count, ownHellosSent, dialsDone else {
            // A ring that did connect is kept; an abort then surfaces on the next collective.
            if case .aborted(let reason)? = verdicts[1] { return failFormation(.topologyFailed("\(reason) while the ring formed")) }
            return []
        }
        var rightLanes: [(Int, ConnectionNumber)] = [], mesh = meshIn
        for (connection, dial) in current.dials {
            switch dial.link {
            case .ring(let lane, _): rightLanes.append((Int(lane), connection))
            case .mesh: mesh[topology.members.firstIndex { $0.id == dial.member.id }!] = connection
            }
        }
        (leftLanes.map(\.1) + Array(meshIn.values)).forEach { hellos[$0] = nil }
        // Links outside the pattern dialed by members whose epoch formed first.
        for (connection, hello) in hellos where hello.epoch == current.epoch && hello.link == .mesh {
            if let rank = topology.members.firstIndex(where: { $0.id == hello.from }), mesh[rank] == nil {
                mesh[rank] = connection
                hellos[connection] = nil
            }
        }
        func byLane(_ lanes: [(Int, ConnectionNumber)]) -> [ConnectionNumber] { lanes.sorted { $0.0 < $1.0 }.map(\.1) }
        links = EpochLinks(left: byLane(leftLanes), right: byLane(rightLanes), mesh: mesh)
        needsTopologyUpdate = false
        formation = nil
        formationStatus = .connected
        return []
    }

    /// Ends the epoch being formed with `failure`, closing what this peer dialed for it.
    func failFormation(_ failure: Failure) -> [Action] {
        let dialed = formation.map { Array($0.dials.keys) } ?? []
        formation = nil
        formationStatus = .failed(failure)
        return dialed.map { .close($0) }
    }

    /// Tells the master this peer could not connect to `member` while the epoch formed.
    func reportUnreachable(_ member: PeerID, _ detail: String) -> [Action] {
        send(.unreachable(epoch: topology.epoch, peer: member, detail: detail))
    }
}
