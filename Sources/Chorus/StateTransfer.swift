import ChorusProtocol
import ChorusTransport

/// An outdated peer's side of a shared-state transfer: it pulls its tensors in chunks, keeping
/// `chunksInFlight` requests open at every source, so the transfer stripes across all of them and
/// the faster ones take more. Each chunk is one data frame received straight into the tensor. A
/// source whose link fails is dropped and its open chunks go to the others; once everything has
/// arrived, every received tensor is hashed again and compared with the elected hash.
struct StateReceiver {
    private struct Chunk {
        let index: UInt32
        let tensor: SharedTensor
        let offset: Int
        let length: Int
    }

    private let chunks: [Chunk]
    private let received: [(index: UInt32, tensor: SharedTensor, electedHash: UInt64)]
    private let sources: [Int]
    private let chunksInFlight: Int
    private let progress: ((SyncProgress) -> Void)?

    /// - Parameters:
    ///   - tensors: the tensors to receive, with their positions in the state (what a request
    ///     names) and their elected hashes.
    ///   - sources: the ranks that hold the elected state.
    init(tensors: [(index: UInt32, tensor: SharedTensor, electedHash: UInt64)], sources: [Int], chunkBytes: Int, chunksInFlight: Int,
         progress: ((SyncProgress) -> Void)?) {
        var chunks: [Chunk] = []
        for (index, tensor, _) in tensors {
            for offset in stride(from: 0, to: tensor.byteCount, by: chunkBytes) {
                chunks.append(Chunk(index: index, tensor: tensor, offset: offset, length: min(chunkBytes, tensor.byteCount - offset)))
            }
        }
        self.chunks = chunks
        self.received = tensors
        self.sources = sources
        self.chunksInFlight = max(1, chunksInFlight)
        self.progress = progress
    }

    var totalBytes: Int { received.reduce(0) { $0 + $1.tensor.byteCount } }

    /// Pulls every chunk, then verifies the hashes.
    /// - Returns: the ranks of the sources lost on the way.
    func run(links: OperationLinks) throws -> [Int] {
        var queue = Array(chunks.indices.reversed()) // popLast takes the lowest index first
        var open: [(chunk: Int, source: Int, request: TransportRequest)] = [] // oldest first
        var live = sources
        var done = 0
        let total = totalBytes

        func loseSource(_ source: Int) {
            live.removeAll { $0 == source }
            links.dropLink(to: source)
            for entry in open where entry.source == source {
                if links.settle(entry.request, peer: source) { done += chunks[entry.chunk].length } else { queue.append(entry.chunk) }
            }
            open.removeAll { $0.source == source }
        }

        func post(_ index: Int, to source: Int) throws {
            let chunk = chunks[index]
            let buffer = UnsafeMutableRawBufferPointer(start: chunk.tensor.base + chunk.offset, count: chunk.length)
            let request = try links.receive(into: buffer, from: source, tag: UInt32(index))
            open.append((index, source, request))
            try links.sendMessage(.stateRequest(tensor: chunk.index, offset: UInt64(chunk.offset),
                                                length: UInt32(chunk.length), tag: UInt32(index)), to: source)
        }

        while true {
            // Top up every live source's window.
            for source in live where !queue.isEmpty {
                while open.count(where: { $0.source == source }) < chunksInFlight, let index = queue.popLast() {
                    do {
                        try post(index, to: source)
                    } catch OperationInterruption.local(.linkFailed) {
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
                done += chunks[head.chunk].length
                progress?(SyncProgress(bytesReceived: done, bytesTotal: total))
            } catch OperationInterruption.local(.linkFailed) {
                queue.append(head.chunk)
                loseSource(head.source)
            }
        }
        let reporter = links.session.peerID
        guard queue.isEmpty else {
            throw OperationInterruption.local(.stateTransferFailed(
                reporter: reporter, detail: "every source was lost with \(queue.count) of \(chunks.count) chunks to go"))
        }
        for source in live { try? links.sendMessage(.stateDone, to: source) }
        for (_, tensor, electedHash) in received {
            let hash = tensor.hash
            guard hash == electedHash else {
                throw OperationInterruption.local(.stateTransferFailed(
                    reporter: reporter, detail: "tensor '\(tensor.name)' hashes to \(hash) after the transfer, not the elected \(electedHash)"))
            }
        }
        return sources.filter { !live.contains($0) }
    }
}

/// An up-to-date peer's side: it answers chunk requests from the receivers (any of their tensors
/// that may not differ, any range inside it) until each has said it is done or is lost.
/// A request out of bounds cuts that receiver off.
struct StateSource {
    let tensors: [SharedTensor]
    /// Receiver rank -> the tensor indices it may ask for.
    let receivers: [Int: Set<UInt32>]

    /// Returns the bytes it delivered (sends that completed).
    func run(links: OperationLinks) throws -> Int {
        var waiting = Set(receivers.keys)
        var sends: [(request: TransportRequest, peer: Int, bytes: Int)] = []
        while !waiting.isEmpty {
            switch try links.nextSignal(from: waiting) {
            case .lost(let peer):
                waiting.remove(peer)
            case .message(let peer, .stateDone):
                waiting.remove(peer)
            case .message(let peer, .stateRequest(let index, let offset, let length, let tag)):
                guard let bytes = requestedBytes(index, offset, length, allowed: receivers[peer]) else {
                    links.dropLink(to: peer) // not a request a receiver of this plan can make
                    waiting.remove(peer)
                    continue
                }
                do {
                    sends.append((try links.send(bytes, to: peer, tag: tag), peer, bytes.count))
                } catch OperationInterruption.local(.linkFailed) {
                    waiting.remove(peer)
                }
            case .message(let peer, _):
                links.dropLink(to: peer)
                waiting.remove(peer)
            }
        }
        return sends.reduce(0) { delivered, send in delivered + (links.settle(send.request, peer: send.peer) ? send.bytes : 0) }
    }

    private func requestedBytes(_ index: UInt32, _ offset: UInt64, _ length: UInt32, allowed: Set<UInt32>?) -> UnsafeRawBufferPointer? {
        guard allowed?.contains(index) == true, Int(index) < tensors.count else { return nil }
        let tensor = tensors[Int(index)]
        guard offset <= UInt64(tensor.byteCount), UInt64(length) <= UInt64(tensor.byteCount) - offset else { return nil }
        return UnsafeRawBufferPointer(start: tensor.base + Int(offset), count: Int(length))
    }
}
