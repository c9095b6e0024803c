import ChorusTransport
import Foundation
import Glibc
import Testing

/// The shared-memory data path between two engines of this process (real sockets for the stream,
/// real segments in /dev/shm): frames of every shape in both rings, the fallback to the stream when
/// the other end does not take the offer, a writer waiting for room when its reader goes, and no
/// segment left behind.
@Suite(.serialized) struct SharedMemoryPathTests {
    typealias Pair = TransportTests.Pair

    /// Sizes around the record header, the largest chunk (512 KiB) and past the 2 MiB ring.
    static let sizes = [0, 1, 63, 64, 65, 524_287, 524_288, 524_289, 5_000_003]

    static func bytes(_ count: Int, seed: Int) -> [UInt8] {
        (0 ..< count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ seed &* 7 &+ $0 >> 9) }
    }

    /// Segments this process has mapped (each shows in /proc/self/maps, its name unlinked).
    static func mappedSegments() -> Int {
        let maps = (try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8)) ?? ""
        return maps.split(separator: "\n").filter { $0.contains("/dev/shm/chorus-") }.count
    }

    /// Segment names left in /dev/shm.
    static func namesLeft() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/dev/shm")) ?? []).filter { $0.hasPrefix("chorus-") }
    }

    /// Sends every size from `from` to `to`, three frames in flight at a time, receives posted after
    /// the sends (so records wait in the ring), and compares bit for bit.
    static func exchange(_ from: TransportEngine, _ fromSide: ConnectionID, _ to: TransportEngine, _ toSide: ConnectionID,
                         seed: Int) throws -> [String] {
        var problems: [String] = []
        for (index, size) in sizes.enumerated() {
            let frames = (0 ..< 3).map { bytes(size, seed: seed + index * 3 + $0) }
            var targets = [[UInt8]](repeating: [UInt8](repeating: 0xEE, count: size), count: 3)
            var sends: [TransportRequest] = []
            for (tag, frame) in frames.enumerated() {
                sends.append(try frame.withUnsafeBytes {
                    try from.postSend(fromSide, address: FrameAddress(epoch: 1, opID: UInt64(index), tag: UInt32(tag)), bytes: $0)
                })
            }
            for tag in 0 ..< 3 {
                let outcome = try targets[tag].withUnsafeMutableBytes { t in
                    let receive = try to.postReceive(toSide, address: FrameAddress(epoch: 1, opID: UInt64(index), tag: UInt32(tag)), into: t)
                    return to.wait(receive, timeout: .seconds(20), interruptible: false)
                }
                if outcome != .completed { problems.append("size \(size) frame \(tag): \(outcome)") }
            }
            for send in sends where from.wait(send, timeout: .seconds(20), interruptible: false) != .completed {
                problems.append("size \(size): a send did not complete")
            }
            // The frames stay alive (the sends read them) until every send completed.
            if targets != frames { problems.append("size \(size): bytes differ") }
        }
        return problems
    }

    @Test func bothRingsCarryFramesOfEveryShapeBitForBit() throws {
        let before = Self.mappedSegments()
        let p = try TransportTests.pair(path: .shm)
        #expect(Self.mappedSegments() == before + 2, "each end maps the link's segment")
        #expect(Self.namesLeft().isEmpty, "the acceptor unlinked the segment's name: \(Self.namesLeft())")
        #expect(try Self.exchange(p.client, p.clientSide, p.server, p.serverSide, seed: 1).isEmpty)
        #expect(try Self.exchange(p.server, p.serverSide, p.client, p.clientSide, seed: 2).isEmpty)
        p.client.close(p.clientSide)
        p.server.close(p.serverSide)
        #expect(Self.mappedSegments() == before, "closing unmaps the segment at both ends")
    }

    /// A dialer that offers shared memory to a listener that only streams (a peer configured for
    /// TCP, or one on another host) is told no, and the stream carries the data both ways.
    @Test func anOfferToAStreamOnlyListenerIsRefusedAndTheStreamCarriesTheData() throws {
        let before = Self.mappedSegments()
        let server = try TransportEngine(settings: TransportTests.settings)
        let port = try server.listen(host: "127.0.0.1", port: 0, path: .tcp)
        let client = try TransportEngine(settings: TransportTests.settings)
        let clientSide = try client.connect(host: "127.0.0.1", port: port, timeout: .seconds(5), path: .shm)
        guard case .accepted(let serverSide)? = server.nextEvent(timeout: .seconds(5)) else { throw TransportTests.TestFailure("no accept") }
        #expect(Self.mappedSegments() == before && Self.namesLeft().isEmpty, "the refused segment is unmapped and unlinked")
        #expect(try Self.exchange(client, clientSide, server, serverSide, seed: 3).isEmpty)
        #expect(try Self.exchange(server, serverSide, client, clientSide, seed: 4).isEmpty)
    }

    /// A writer whose ring is full waits for room; when its reader's end closes, the send fails
    /// (peer closed), it does not hang, and nothing is left in /dev/shm.
    @Test func aWriterWaitingForRoomFailsWhenItsReaderGoes() throws {
        let p = try TransportTests.pair(path: .shm)
        let frame = Self.bytes(6 << 20, seed: 5) // three times the ring
        try frame.withUnsafeBytes { s in
            let send = try p.client.postSend(p.clientSide, address: FrameAddress(epoch: 1, opID: 1, tag: 0), bytes: s)
            #expect(p.client.wait(send, timeout: .milliseconds(300), interruptible: false) == .timedOut, "the ring is full")
            p.server.close(p.serverSide)
            guard case .failed(let error) = p.client.wait(send, timeout: .seconds(10), interruptible: false) else {
                Issue.record("the send did not fail")
                return
            }
            #expect(error.code == .peerClosed, "\(error)")
        }
        #expect(Self.namesLeft().isEmpty, "\(Self.namesLeft())")
    }
}
