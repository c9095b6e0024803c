import ChorusProtocol
import Testing

@Suite struct CodecTests {
    static let address = PeerAddress(host: "127.0.0.1", port: 40001)
    static let descriptor = OperationDescriptor(collective: 1, dataType: 3, reduceOp: 4, count: 1 << 40)

    @Test func everyMessageRoundTrips() throws {
        let toMaster: [PeerToMaster] = [
            .register(listen: Self.address), .register(listen: Self.address, peerGroup: 0xFFFF_FFFE), .updateTopology(epoch: 7, minimumWorldSize: 4), .updateTopology(epoch: 7, minimumWorldSize: 1, admitting: false), .updateTopology(epoch: 7, minimumWorldSize: 2, ringOrder: [3, 1, 2]), .leave(epoch: 9),
            .report(epoch: 3, opID: 11, descriptor: Self.descriptor, outcome: .success),
            .committed(epoch: 3, opID: 11, descriptor: Self.descriptor),
            .begin(epoch: 3, opID: 11, descriptor: Self.descriptor),
            .report(epoch: 3, opID: 12, descriptor: Self.descriptor, outcome: .aborted(.linkFailed(reporter: 5, peer: 6, detail: "reset"))),
            .rejoin(Rejoin(peer: 17, group: 99, peerGroup: 3, listen: Self.address, topology: Topology(epoch: 5, members: [Member(id: 17, address: Self.address)]),
                           lastDecidedOp: 9, lastOutcome: .aborted(.peerLost(3)), lastSyncedRevision: 4, leaving: true)),
            .rejoin(Rejoin(peer: 18, group: 99, listen: Self.address, topology: Topology(epoch: 0, members: []))),
        ]
        for message in toMaster { #expect(try PeerToMaster(decoding: message.encoded()) == message) }
        let reasons: [AbortReason] = [.peerLost(2), .peerLeft(3), .timedOut(reporter: 4, notArrived: []),
                                      .timedOut(reporter: 4, notArrived: [0, 7]), .argumentMismatch("count differs"), .staleEpoch,
                                      .linkFailed(reporter: 1, peer: nil, detail: "x"), .topologyUpdateRequested(6),
                                      .stateMismatch("shapes"), .stateSenderOutdated(2), .stateTransferFailed(reporter: 3, detail: "hash")]
        var toPeer: [MasterToPeer] = [.registered(42, group: 0xDEAD_BEEF_0123), .membershipPending(joining: 3, leaving: 1), .left, .rejected("no"),
                                      .resumed,
                                      .topology(Topology(epoch: 5, members: [Member(id: 1, address: Self.address),
                                                                             Member(id: 9, address: PeerAddress(host: "::1", port: 1))]))]
        toPeer += reasons.map { .verdict(epoch: 2, opID: 8, outcome: .aborted($0)) }
        for message in toPeer { #expect(try MasterToPeer(decoding: message.encoded()) == message) }
        for link in [LinkKind.ring(lane: 1, lanes: 2), .mesh] {
            let hello = PeerToPeer.hello(epoch: 4, from: 1, to: 2, link: link)
            #expect(try PeerToPeer(decoding: hello.encoded()) == hello)
        }
    }

    @Test func truncatedAndTrailingBytesAreRejected() {
        let bytes = PeerToMaster.report(epoch: 3, opID: 11, descriptor: Self.descriptor, outcome: .success).encoded()
        for cut in 0 ..< bytes.count {
            #expect(throws: DecodeError.self) { try PeerToMaster(decoding: Array(bytes[0 ..< cut])) }
        }
        #expect(throws: DecodeError.self) { try PeerToMaster(decoding: bytes + [0]) }
    }

    /// Found by Tests/Fuzz: invalid UTF-8 used to be repaired on decode, so it did not round-trip.
    @Test func invalidUTF8AndNonCanonicalFieldsAreRejected() throws {
        #expect(throws: DecodeError.self) { try MasterToPeer(decoding: [0x46, 0x01, 0x00, 0xF1]) }
        let mesh = PeerToPeer.hello(epoch: 1, from: 2, to: 3, link: .mesh).encoded()
        #expect(throws: DecodeError.self) { try PeerToPeer(decoding: Array(mesh.dropLast(4)) + [1, 0, 0, 0]) }
        let update = PeerToMaster.updateTopology(epoch: 1, minimumWorldSize: 1, admitting: true).encoded()
        #expect(throws: DecodeError("admitting flag 2 is not 0 or 1")) { try PeerToMaster(decoding: update.dropLast(5) + [2, 0, 0, 0, 0]) }
        // A rejoin whose revision is marked absent carries none (found by the fuzzer: it re-encoded as 0).
        let rejoin = PeerToMaster.rejoin(Rejoin(peer: 1, group: 2, listen: Self.address, topology: Topology(epoch: 0, members: []))).encoded()
        var marked = rejoin
        marked[marked.count - 9] = 5
        #expect(throws: DecodeError("a revision of 5 marked absent")) { try PeerToMaster(decoding: marked) }
        // Long strings are cut at a character boundary (1024 bytes = 512 "é"), so they stay valid.
        let long = MasterToPeer.rejected(String(repeating: "é", count: 700))
        #expect(try MasterToPeer(decoding: long.encoded()) == .rejected(String(repeating: "é", count: 512)))
    }

    @Test func unknownKindsAndWrongDirectionsAreRejected() {
        #expect(throws: DecodeError.self) { try PeerToMaster(decoding: [0xEE]) }
        #expect(throws: DecodeError.self) { try PeerToMaster(decoding: MasterToPeer.left.encoded()) }
        #expect(throws: DecodeError.self) { try MasterToPeer(decoding: PeerToMaster.leave(epoch: 1).encoded()) }
    }

    @Test func hugeCountsAreRejectedBeforeAllocating() {
        // A topology claiming 4 billion members in a 13-byte message.
        let hostile: [UInt8] = [0x42, 1, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]
        #expect(throws: DecodeError.self) { try MasterToPeer(decoding: hostile) }
        // A string claiming 65535 bytes.
        let longString: [UInt8] = [0x46, 0xFF, 0xFF]
        #expect(throws: DecodeError.self) { try MasterToPeer(decoding: longString) }
    }
}
