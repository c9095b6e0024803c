import ChorusAlgorithms
import Foundation

/// An in-process fabric of ranks for testing algorithms without sockets or a master. Each ordered
/// pair of ranks has a queue of frames. A send copies its bytes and completes at once; the frame is
/// delivered after a delay drawn from the seed (never before an earlier frame of the same pair, so
/// the order on one link holds while the interleaving across links changes from seed to seed). A
/// receive takes the next frame from its peer and, like the transport, fails the link when the tag or
/// the byte count differs. `kill(rank)` fails every link of that rank: waits on them throw, as a
/// crashed peer's neighbours see. Every wait has a deadline, so a broken algorithm fails instead of
/// hanging the suite.
public final class InProcessFabric: @unchecked Sendable {
    public let worldSize: Int
    private let condition = NSCondition()
    private var frames: [[[Frame]]]
    /// Control messages (a state transfer's), delivered on the same clock as the link's frames.
    private var messages: [[[(message: TransferMessage, deliverAt: UInt64)]]]
    private var posted: [[[InProcessRequest]]]
    private var lastDelivery: [[UInt64]]
    private var failedPairs: [[String?]]
    private var dead: Set<Int> = []
    private var random: UInt64
    private let maxDelayNanoseconds: UInt64
    private let deadline: UInt64

    struct Frame {
        let tag: UInt32
        let bytes: [UInt8]
        let deliverAt: UInt64
    }

    /// - Parameters:
    ///   - maxDelay: each frame is delivered 0...maxDelay after its send (and after the previous frame
    ///     of its link).
    ///   - timeout: the deadline of every wait, from the fabric's creation.
    public init(worldSize: Int, seed: UInt64, maxDelay: Duration = .microseconds(200), timeout: Duration = .seconds(20)) {
        self.worldSize = worldSize
        frames = Array(repeating: Array(repeating: [], count: worldSize), count: worldSize)
        messages = Array(repeating: Array(repeating: [], count: worldSize), count: worldSize)
        posted = Array(repeating: Array(repeating: [], count: worldSize), count: worldSize)
        lastDelivery = Array(repeating: Array(repeating: 0, count: worldSize), count: worldSize)
        failedPairs = Array(repeating: Array(repeating: nil, count: worldSize), count: worldSize)
        random = seed | 1
        maxDelayNanoseconds = UInt64(maxDelay.components.attoseconds / 1_000_000_000) + UInt64(maxDelay.components.seconds) * 1_000_000_000
        deadline = Self.now() + UInt64(timeout.components.seconds) * 1_000_000_000
    }

    public func links(rank: Int) -> InProcessLinks { InProcessLinks(fabric: self, rank: rank) }

    /// Fails every link of `rank`, now.
    public func kill(_ rank: Int) {
        condition.lock()
        dead.insert(rank)
        for other in 0 ..< worldSize where other != rank {
            fail(from: rank, to: other, "rank \(rank) died")
            fail(from: other, to: rank, "rank \(rank) died")
        }
        condition.broadcast()
        condition.unlock()
    }

    /// Runs `body` for every rank, each on its own thread (ranks block on each other), and returns
    /// each rank's error, nil where it finished. A rank whose body throws has its links failed, as
    /// the public layer tears an operation's links down when it fails, so its neighbours fail too.
    public static func run(_ fabric: InProcessFabric, _ body: @escaping @Sendable (InProcessLinks) throws -> Void) -> [String?] {
        let results = ResultBox(count: fabric.worldSize)
        let group = DispatchGroup()
        for rank in 0 ..< fabric.worldSize {
            group.enter()
            let thread = Thread {
                do {
                    try body(fabric.links(rank: rank))
                } catch {
                    results.set(rank, "\(error)")
                    fabric.kill(rank)
                }
                group.leave()
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
        group.wait()
        return results.values
    }

    // MARK: - What the links call

    func send(_ bytes: UnsafeRawBufferPointer, from: Int, to: Int, tag: UInt32) throws -> InProcessRequest {
        condition.lock()
        defer { condition.unlock() }
        if let why = failedPairs[from][to] { throw InProcessLinkError(why) }
        let at = max(lastDelivery[from][to], Self.now() + nextDelay())
        lastDelivery[from][to] = at
        frames[from][to].append(Frame(tag: tag, bytes: Array(bytes), deliverAt: at))
        condition.broadcast()
        let request = InProcessRequest(from: from, to: to)
        request.state = .done
        return request
    }

    func receive(into buffer: UnsafeMutableRawBufferPointer, from: Int, to: Int, tag: UInt32) throws -> InProcessRequest {
        condition.lock()
        defer { condition.unlock() }
        if let why = failedPairs[from][to] { throw InProcessLinkError(why) }
        let request = InProcessRequest(from: from, to: to, tag: tag, buffer: buffer)
        posted[from][to].append(request)
        return request
    }

    func wait(_ request: InProcessRequest, rank: Int) throws {
        condition.lock()
        defer { condition.unlock() }
        while true {
            if dead.contains(rank) { throw InProcessLinkError("rank \(rank) is dead", linkOnly: false) }
            deliver(from: request.from, to: request.to)
            switch request.state {
            case .done: return
            case .failed(let why): throw InProcessLinkError(why)
            case .pending: break
            }
            let now = Self.now()
            guard now < deadline else {
                throw InProcessLinkError("rank \(rank) timed out waiting on the link \(request.from)->\(request.to)", linkOnly: false)
            }
            let next = frames[request.from][request.to].first.map { max($0.deliverAt, now + 1_000) } ?? deadline
            _ = condition.wait(until: Date(timeIntervalSinceNow: Double(min(next, deadline) - now) / 1e9))
        }
    }

    func sendMessage(_ message: TransferMessage, from: Int, to: Int) throws {
        condition.lock()
        defer { condition.unlock() }
        if let why = failedPairs[from][to] { throw InProcessLinkError(why) }
        let at = max(lastDelivery[from][to], Self.now() + nextDelay())
        lastDelivery[from][to] = at
        messages[from][to].append((message, at))
        condition.broadcast()
    }

    /// The first delivered message from one of `peers` to `rank` (lowest rank first), else the
    /// first of them whose link failed.
    func nextSignal(rank: Int, from peers: Set<Int>) throws -> TransferSignal {
        condition.lock()
        defer { condition.unlock() }
        let ordered = peers.sorted()
        while true {
            if dead.contains(rank) { throw InProcessLinkError("rank \(rank) is dead", linkOnly: false) }
            let now = Self.now()
            for peer in ordered {
                if let first = messages[peer][rank].first, first.deliverAt <= now {
                    messages[peer][rank].removeFirst()
                    return .message(from: peer, first.message)
                }
            }
            if let lost = ordered.first(where: { failedPairs[$0][rank] != nil || failedPairs[rank][$0] != nil }) { return .lost(lost) }
            guard now < deadline else { throw InProcessLinkError("rank \(rank) timed out waiting for a message", linkOnly: false) }
            let next = ordered.compactMap { messages[$0][rank].first?.deliverAt }.min().map { max($0, now + 1_000) } ?? deadline
            _ = condition.wait(until: Date(timeIntervalSinceNow: Double(min(next, deadline) - now) / 1e9))
        }
    }

    /// Fails both directions between `rank` and `peer`.
    func cut(_ rank: Int, _ peer: Int) {
        condition.lock()
        fail(from: rank, to: peer, "rank \(rank) cut off rank \(peer)")
        fail(from: peer, to: rank, "rank \(rank) cut off rank \(peer)")
        condition.broadcast()
        condition.unlock()
    }

    // MARK: - Internals (under the lock)

    /// Matches delivered frames of one link with its posted receives, in order.
    private func deliver(from: Int, to: Int) {
        let now = Self.now()
        while let frame = frames[from][to].first, frame.deliverAt <= now, let request = posted[from][to].first {
            frames[from][to].removeFirst()
            posted[from][to].removeFirst()
            guard frame.tag == request.tag, frame.bytes.count == request.buffer!.count else {
                fail(from: from, to: to, "link \(from)->\(to): frame tag \(frame.tag) of \(frame.bytes.count) bytes, receive tag \(request.tag) of \(request.buffer!.count)")
                request.state = .failed("link \(from)->\(to): frame tag \(frame.tag) of \(frame.bytes.count) bytes, receive tag \(request.tag) of \(request.buffer!.count)")
                return
            }
            frame.bytes.withUnsafeBytes { request.buffer!.copyMemory(from: $0) }
            request.state = .done
        }
    }

    private func fail(from: Int, to: Int, _ why: String) {
        failedPairs[from][to] = failedPairs[from][to] ?? why
        for request in posted[from][to] { request.state = .failed(why) }
        posted[from][to] = []
        frames[from][to] = []
        messages[from][to] = []
    }

    private func nextDelay() -> UInt64 {
        guard maxDelayNanoseconds > 0 else { return 0 }
        random = random &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return (random >> 33) % (maxDelayNanoseconds + 1)
    }

    private static func now() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
    }
}

/// One rank's view of the fabric.
public struct InProcessLinks: CollectiveLinks {
    let fabric: InProcessFabric
    public let rank: Int
    public var worldSize: Int { fabric.worldSize }

    public func send(_ bytes: UnsafeRawBufferPointer, to peer: Int, tag: UInt32) throws -> InProcessRequest {
        try fabric.send(bytes, from: rank, to: peer, tag: tag)
    }

    public func receive(into buffer: UnsafeMutableRawBufferPointer, from peer: Int, tag: UInt32) throws -> InProcessRequest {
        try fabric.receive(into: buffer, from: peer, to: rank, tag: tag)
    }

    public func wait(_ request: InProcessRequest) throws { try fabric.wait(request, rank: rank) }
}

extension InProcessLinks: TransferLinks {
    public func sendMessage(_ message: TransferMessage, to peer: Int) throws { try fabric.sendMessage(message, from: rank, to: peer) }
    public func nextSignal(from peers: Set<Int>) throws -> TransferSignal { try fabric.nextSignal(rank: rank, from: peers) }
    public func dropLink(to peer: Int) { fabric.cut(rank, peer) }
    /// A dropped link fails its requests at once, so the request's own wait is the settling.
    public func settle(_ request: InProcessRequest, peer: Int) -> Bool { (try? wait(request)) != nil }
    public func isLinkFailure(_ error: any Error) -> Bool { (error as? InProcessLinkError)?.linkOnly == true }
}

public final class InProcessRequest: @unchecked Sendable {
    enum State {
        case pending, done
        case failed(String)
    }
    let from: Int, to: Int, tag: UInt32
    let buffer: UnsafeMutableRawBufferPointer?
    var state = State.pending // under the fabric's lock

    init(from: Int, to: Int, tag: UInt32 = 0, buffer: UnsafeMutableRawBufferPointer? = nil) {
        self.from = from
        self.to = to
        self.tag = tag
        self.buffer = buffer
    }
}

public struct InProcessLinkError: Error, CustomStringConvertible {
    public let description: String
    /// Only one link failed (false: this rank died, or its wait reached the fabric's deadline).
    public let linkOnly: Bool
    init(_ description: String, linkOnly: Bool = true) {
        self.description = description
        self.linkOnly = linkOnly
    }
}

private final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private var results: [String?]
    init(count: Int) { results = Array(repeating: nil, count: count) }
    func set(_ index: Int, _ value: String) { lock.lock(); results[index] = value; lock.unlock() }
    var values: [String?] { lock.lock(); defer { lock.unlock() }; return results }
}
