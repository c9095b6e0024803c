import ChorusProtocol
import ChorusTransport

/// What a member waiting for requests hears next.
enum PeerSignal {
    case message(from: Int, PeerToPeer)
    /// The mesh link to this member failed.
    case lost(Int)
}

/// Control messages between members within one operation (shared-state requests), over the mesh.
extension OperationLinks {
    /// Sends `message` to member `peer` as a control frame of this operation.
    func sendMessage(_ message: PeerToPeer, to peer: Int) throws {
        let link = links.mesh[peer]!
        do {
            try session.engine.sendControl(link, address: FrameAddress(epoch: epoch, opID: opID), payload: message.encoded())
        } catch {
            throw linkInterruption(link, error)
        }
    }

    /// Waits for the next message of this operation from one of `peers`, or the loss of one of them.
    /// Throws like `wait`: the master's abort verdict, a lost master, the operation deadline.
    func nextSignal(from peers: Set<Int>) throws -> PeerSignal {
        try announce()
        session.drainEvents()
        let signal = try session.wait(until: deadline) { () throws(OperationInterruption) -> PeerSignal? in
            while let (connection, message) = session.takePeerMessage(opID: opID) {
                if let peer = rank(of: connection) { return .message(from: peer, message) }
            }
            if let lost = peers.first(where: { session.linkFailure(links.mesh[$0]!) != nil }) { return .lost(lost) }
            if case .aborted(let reason)? = session.verdict(for: opID) { throw .verdict(reason) }
            if let error = session.masterLossError { throw .masterLost(error) }
            return nil
        }
        guard let signal else { throw OperationInterruption.local(.timedOut(reporter: session.peerID, notArrived: [])) }
        return signal
    }

    /// The member at the other end of a mesh link.
    func rank(of connection: ConnectionID) -> Int? {
        links.mesh.first { $0.value == connection }?.key
    }

    /// Cuts member `peer` off for the rest of the epoch (a lost source, a misbehaving receiver):
    /// its requests finish at once.
    func dropLink(to peer: Int) {
        session.engine.close(links.mesh[peer]!)
    }

    /// Waits (not interruptibly) until `request` on the link to `peer` has finished; true when it
    /// completed. For requests on a dropped link, or sends whose receiver may be gone: past the
    /// operation deadline the link is dropped, which finishes the request at once.
    func settle(_ request: TransportRequest, peer: Int) -> Bool {
        var outcome = session.engine.wait(request, timeout: deadline - .now, interruptible: false)
        if !request.isFinished {
            dropLink(to: peer)
            // Closing finishes every request on the link promptly; the bound is a backstop.
            outcome = session.engine.wait(request, timeout: .seconds(30), interruptible: false)
            precondition(request.isFinished, "a request on a closed link did not finish")
        }
        return outcome == .completed
    }
}
