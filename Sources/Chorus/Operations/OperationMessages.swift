import ChorusAlgorithms
import ChorusProtocol
import ChorusTransport

/// Control messages between members within one operation (a shared-state transfer's requests),
/// over the mesh, as `PeerToPeer` frames.
extension OperationLinks: TransferLinks {
    func sendMessage(_ message: TransferMessage, to peer: Int) throws {
        let link = try meshLink(to: peer)
        let frame: PeerToPeer = switch message {
        case .request(let tensor, let offset, let length, let tag): .stateRequest(tensor: tensor, offset: offset, length: length, tag: tag)
        case .done: .stateDone
        }
        do {
            try session.engine.sendControl(ConnectionID(rawValue: link), address: FrameAddress(epoch: epoch, opID: opID), payload: frame.encoded())
        } catch {
            throw linkInterruption(link, error)
        }
    }

    /// Throws like `wait`: the master's abort verdict, a lost master, the operation deadline.
    /// A member that sends a frame a transfer does not expect is cut off and reported lost.
    func nextSignal(from peers: Set<Int>) throws -> TransferSignal {
        try announce()
        session.drainEvents()
        let signal = try session.wait(until: deadline) { () throws(OperationInterruption) -> TransferSignal? in
            while let (connection, message) = session.takePeerMessage(opID: opID) {
                guard let peer = rank(of: connection) else { continue }
                switch message {
                case .stateRequest(let tensor, let offset, let length, let tag):
                    return .message(from: peer, .request(tensor: tensor, offset: offset, length: length, tag: tag))
                case .stateDone:
                    return .message(from: peer, .done)
                case .hello:
                    dropLink(to: peer)
                    return .lost(peer)
                }
            }
            // A receiver outside the pattern has no link until it dials one.
            if let lost = peers.first(where: { session.links?.mesh[$0].map { session.linkFailure($0) != nil } ?? false }) { return .lost(lost) }
            if case .aborted(let reason)? = session.verdict(for: opID) { throw .verdict(reason) }
            if let error = session.masterLossError { throw .masterLost(error) }
            return nil
        }
        guard let signal else { throw OperationInterruption.local(.timedOut(reporter: session.peerID, notArrived: [])) }
        return signal
    }

    /// The member at the other end of a mesh link.
    func rank(of connection: ConnectionNumber) -> Int? { session.links?.rank(onMesh: connection) }

    func dropLink(to peer: Int) {
        guard let link = session.links?.mesh[peer] else { return }
        session.engine.close(ConnectionID(rawValue: link))
    }

    /// Waits (not interruptibly) until the operation's deadline; past it the link is dropped, which
    /// finishes the request at once.
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

    func isLinkFailure(_ error: any Error) -> Bool {
        if case OperationInterruption.local(.linkFailed) = error { true } else { false }
    }
}
