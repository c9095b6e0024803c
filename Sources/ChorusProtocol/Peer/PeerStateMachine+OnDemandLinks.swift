/// Mesh links outside the epoch's pattern (`EpochLinks.meshPartners`), dialed when an operation
/// first needs one. Only one side of such a pair ever needs it (a shared-state transfer's receiver
/// pulls from a source; the algorithms that need both sides use pattern links), so that side dials,
/// and the other adopts the link when its hello arrives (`adoptMeshHello`).
extension PeerStateMachine {
    /// Asks for a mesh link to the member at `rank` when the epoch has none and none is being dialed:
    /// the answer (`dialed`, `dialFailed`) adds it to `links`, or records why not (`meshDialFailure`).
    public func dialMeshLink(to rank: Int) -> [Action] {
        guard let links, links.mesh[rank] == nil, rank != self.rank, topology.members.indices.contains(rank),
              !onDemandDials.values.contains(where: { $0.member.id == topology.members[rank].id }) else { return [] }
        onDemandFailures[rank] = nil
        return [.connectToPeer(topology.members[rank], .mesh)]
    }

    /// Why the last dial of a mesh link to the member at `rank` failed.
    public func meshDialFailure(to rank: Int) -> String? { onDemandFailures[rank] }

    func onDemandDialed(_ connection: ConnectionNumber, _ dial: Dial, _ first: Action) -> [Action] {
        guard links != nil, case .mesh = dial.link else { return [.close(connection)] }
        onDemandDials[connection] = dial
        return [first] + settleOnDemandDial(connection)
    }

    func onDemandDialFailed(to member: Member, _ detail: String) -> [Action] {
        if let rank = topology.members.firstIndex(of: member) { onDemandFailures[rank] = detail }
        return []
    }

    /// The acceptor's handshake frame on a link dialed on demand.
    func continueOnDemandDial(_ connection: ConnectionNumber, _ payload: [UInt8]) -> [Action] {
        guard var dial = onDemandDials[connection] else { return [] }
        let actions = dial.takeHandshake(payload, on: connection)
        onDemandDials[connection] = dial
        return actions + settleOnDemandDial(connection)
    }

    /// A link dialed on demand failed before it was ready.
    func onDemandDialLost(_ connection: ConnectionNumber, _ error: any Error & Sendable) -> [Action] {
        if onDemandDials[connection]?.failure == nil { onDemandDials[connection]?.failure = "\(error)" }
        return settleOnDemandDial(connection)
    }

    /// Moves a dial into the epoch's mesh once its hello went out behind an accepted handshake (at
    /// once without a secret), or records its failure.
    private func settleOnDemandDial(_ connection: ConnectionNumber) -> [Action] {
        guard let dial = onDemandDials[connection], let rank = topology.members.firstIndex(of: dial.member) else { return [] }
        if let failure = dial.failure {
            onDemandDials[connection] = nil
            onDemandFailures[rank] = failure
            return [.close(connection)]
        }
        guard dial.handshake == nil || dial.authenticated else { return [] }
        onDemandDials[connection] = nil
        links?.mesh[rank] = connection
        return []
    }

    /// A mesh hello of the current epoch after its links formed: a member dialed a link outside the
    /// pattern. The first link of a pair counts; another is closed.
    func adoptMeshHello(_ connection: ConnectionNumber, from member: PeerID) -> [Action] {
        guard let rank = topology.members.firstIndex(where: { $0.id == member }), rank != self.rank,
              links?.mesh[rank] == nil else { return [.close(connection)] }
        links?.mesh[rank] = connection
        return [.admit(connection)]
    }
}

extension PeerStateMachine.Dial {
    /// Takes the acceptor's handshake frame on this dial: answers it (the hello goes right behind the
    /// proof), or records the failure. Any other frame before the link is ready fails the dial.
    mutating func takeHandshake(_ payload: [UInt8], on connection: ConnectionNumber) -> [PeerStateMachine.Action] {
        guard var handshake, !authenticated else {
            failure = "it sent a frame before the link was ready"
            return [.close(connection)]
        }
        do {
            let actions: [PeerStateMachine.Action]
            switch try handshake.receive(try Handshake(decoding: payload)) {
            case .reply(let proof):
                actions = [.sendHandshake(connection, proof), .sendToPeer(connection, hello)]
            case .authenticated:
                authenticated = true
                actions = [.trust(connection)]
            }
            self.handshake = handshake
            return actions
        } catch let refusal as HandshakeFailure {
            failure = refusal.description
            refusedAuthentication = true
            return [.sendHandshake(connection, .refused(refusal.reason)), .close(connection)]
        } catch {
            failure = "\(error)"
            return [.close(connection)]
        }
    }
}
