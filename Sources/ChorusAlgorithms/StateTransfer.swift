/// A control message of a shared-state transfer (the public layer carries it as `PeerToPeer`).
public enum TransferMessage: Hashable, Sendable {
    /// A receiver asks a source for `length` bytes of tensor `tensor` from `offset`, to come back as
    /// the data frame `tag`.
    case request(tensor: UInt32, offset: UInt64, length: UInt32, tag: UInt32)
    /// The receiver needs nothing more from this source.
    case done
}

/// What a source waiting for requests hears next.
public enum TransferSignal: Hashable, Sendable {
    case message(from: Int, TransferMessage)
    /// The link to this member failed, or it sent something a transfer does not expect (and was cut off).
    case lost(Int)
}

/// What a shared-state transfer needs beyond data frames: control messages both ways, cutting one
/// member off, and waiting out a request whose link may be gone.
public protocol TransferLinks: CollectiveLinks {
    func sendMessage(_ message: TransferMessage, to peer: Int) throws
    /// The next message of this operation from one of `peers`, or the loss of one of them.
    func nextSignal(from peers: Set<Int>) throws -> TransferSignal
    /// Cuts member `peer` off for the rest of the operation: its requests finish at once.
    func dropLink(to peer: Int)
    /// Waits until `request` on the link to `peer` has finished, whatever became of the link; true
    /// when it completed.
    func settle(_ request: Request, peer: Int) -> Bool
    /// True when `error`, thrown by these links, means only that the link it concerned failed (a
    /// transfer goes on with the other members); false for an abort, a lost master, a deadline.
    func isLinkFailure(_ error: any Error) -> Bool
}

/// A transfer that cannot finish: every source was lost before everything arrived.
public struct StateTransferError: Error, Hashable, CustomStringConvertible {
    public let chunksLeft: Int
    public let chunks: Int
    public var description: String { "every source was lost with \(chunksLeft) of \(chunks) chunks to go" }
}

/// An outdated member's side of a shared-state transfer: it pulls its tensors in chunks, keeping
/// `chunksInFlight` requests open at every source, so the transfer stripes across all of them and
/// the faster ones take more. Each chunk is one data frame received straight into the tensor. A
/// source whose link fails is dropped and its open chunks go to the others. (The caller checks the
/// received tensors against the elected hashes.)
public struct StateReceiver {
    private struct Chunk {
        let tensor: UInt32
        let buffer: UnsafeMutableRawBufferPointer
        let offset: Int
    }

    private let chunks: [Chunk]
    private let sources: [Int]
    private let chunksInFlight: Int
    public let totalBytes: Int
    private let progress: ((_ received: Int, _ total: Int) -> Void)?

    /// - Parameters:
    ///   - tensors: the tensors to receive, each with its position in the state (what a request names).
    ///   - sources: the ranks that hold the elected state.
    ///   - progress: called after every chunk with the bytes received so far and in all.
    public init(tensors: [(index: UInt32, buffer: UnsafeMutableRawBufferPointer)], sources: [Int], chunkBytes: Int,
                chunksInFlight: Int, progress: ((_ received: Int, _ total: Int) -> Void)? = nil) {
        precondition(chunkBytes > 0, "chunks must hold at least one byte")
        var chunks: [Chunk] = []
        for (index, buffer) in tensors {
            for offset in stride(from: 0, to: buffer.count, by: chunkBytes) {
                let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[offset ..< min(offset + chunkBytes, buffer.count)])
                chunks.append(Chunk(tensor: index, buffer: piece, offset: offset))
            }
        }
        self.chunks = chunks
        self.sources = sources
        self.chunksInFlight = max(1, chunksInFlight)
        self.totalBytes = tensors.reduce(0) { $0 + $1.buffer.count }
        self.progress = progress
    }

    /// Pulls every chunk.
    /// - Returns: the ranks of the sources lost on the way.
    /// - Throws: `StateTransferError` when every source was lost first; the links' own errors.
    public func run<Links: TransferLinks>(links: Links) throws -> [Int] {
        var queue = Array(chunks.indices.reversed()) // popLast takes the lowest index first
        var open: [(chunk: Int, source: Int, request: Links.Request)] = [] // oldest first
        var live = sources
        var done = 0

        func loseSource(_ source: Int) {
            live.removeAll { $0 == source }
            links.dropLink(to: source)
            for entry in open where entry.source == source {
                if links.settle(entry.request, peer: source) { done += chunks[entry.chunk].buffer.count } else { queue.append(entry.chunk) }
            }
            open.removeAll { $0.source == source }
        }

        func post(_ index: Int, to source: Int) throws {
            let chunk = chunks[index]
            let request = try links.receive(into: chunk.buffer, from: source, tag: UInt32(index))
            open.append((index, source, request))
            try links.sendMessage(.request(tensor: chunk.tensor, offset: UInt64(chunk.offset),
                                           length: UInt32(chunk.buffer.count), tag: UInt32(index)), to: source)
        }

        while true {
            // Top up every live source's window.
            for source in live where !queue.isEmpty {
                while open.count(where: { $0.source == source }) < chunksInFlight, let index = queue.popLast() {
                    do {
                        try post(index, to: source)
                    } catch where links.isLinkFailure(error) {
                        queue.append(index)
                        loseSource(source)
                        break
                    }
                }
            }
            guard !open.isEmpty else { break }
            let head = open.removeFirst()
            do {
                try links.wait(head.request)
                done += chunks[head.chunk].buffer.count
                progress?(done, totalBytes)
            } catch where links.isLinkFailure(error) {
                queue.append(head.chunk)
                loseSource(head.source)
            }
        }
        guard queue.isEmpty else { throw StateTransferError(chunksLeft: queue.count, chunks: chunks.count) }
        for source in live { try? links.sendMessage(.done, to: source) }
        return sources.filter { !live.contains($0) }
    }
}

/// An up-to-date member's side: it answers chunk requests from the receivers (any of their tensors,
/// any range inside it) until each has said it is done or is lost. A request for a tensor the plan
/// does not give that receiver, or out of bounds, cuts that receiver off.
public struct StateSource {
    let tensors: [UnsafeRawBufferPointer]
    /// Receiver rank -> the tensor indices it may ask for.
    let receivers: [Int: Set<UInt32>]

    public init(tensors: [UnsafeRawBufferPointer], receivers: [Int: Set<UInt32>]) {
        self.tensors = tensors
        self.receivers = receivers
    }

    /// Returns the bytes it delivered (sends that completed).
    public func run<Links: TransferLinks>(links: Links) throws -> Int {
        var waiting = Set(receivers.keys)
        var sends: [(request: Links.Request, peer: Int, bytes: Int)] = []
        while !waiting.isEmpty {
            switch try links.nextSignal(from: waiting) {
            case .lost(let peer), .message(let peer, .done):
                waiting.remove(peer)
            case .message(let peer, .request(let index, let offset, let length, let tag)):
                guard let bytes = requestedBytes(index, offset, length, allowed: receivers[peer]) else {
                    links.dropLink(to: peer) // not a request a receiver of this plan can make
                    waiting.remove(peer)
                    continue
                }
                do {
                    sends.append((try links.send(bytes, to: peer, tag: tag), peer, bytes.count))
                } catch where links.isLinkFailure(error) {
                    waiting.remove(peer)
                }
            }
        }
        return sends.reduce(0) { delivered, send in delivered + (links.settle(send.request, peer: send.peer) ? send.bytes : 0) }
    }

    private func requestedBytes(_ index: UInt32, _ offset: UInt64, _ length: UInt32, allowed: Set<UInt32>?) -> UnsafeRawBufferPointer? {
        guard allowed?.contains(index) == true, Int(index) < tensors.count else { return nil }
        let tensor = tensors[Int(index)]
        guard offset <= UInt64(tensor.count), UInt64(length) <= UInt64(tensor.count) - offset else { return nil }
        return UnsafeRawBufferPointer(rebasing: tensor[Int(offset) ..< Int(offset) + Int(length)])
    }
}
