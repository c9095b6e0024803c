import ChorusTransport
import Glibc
import Synchronization
import Testing

/// The engine over real loopback sockets with ephemeral ports.
@Suite(.serialized) struct TransportTests {
    static let settings = TransportSettings(heartbeatInterval: .milliseconds(100), idleTimeout: .seconds(2),
                                            maxControlBytes: 4096, spinWait: .zero)

    /// Two engines joined by one connection.
    struct Pair {
        let server: TransportEngine
        let client: TransportEngine
        let serverSide: ConnectionID
        let clientSide: ConnectionID
        let port: UInt16
    }

    /// - Parameter path: the data path of both ends (`.shm`: the connection's data in shared-memory rings).
    static func pair(settings: TransportSettings = settings, path: TransportEngine.DataPath = .tcp) throws -> Pair {
        let server = try TransportEngine(settings: settings)
        let port = try server.listen(host: "127.0.0.1", port: 0, path: path)
        let client = try TransportEngine(settings: settings)
        let clientSide = try client.connect(host: "127.0.0.1", port: port, timeout: .seconds(5), path: path)
        guard case .accepted(let serverSide)? = server.nextEvent(timeout: .seconds(5)) else { throw TestFailure("no accept") }
        return Pair(server: server, client: client, serverSide: serverSide, clientSide: clientSide, port: port)
    }

    struct TestFailure: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    @Test func controlFramesArriveIntactAsEvents() throws {
        let p = try Self.pair()
        let payload = (0 ..< 1000).map { UInt8($0 % 251) }
        try p.client.sendControl(p.clientSide, address: FrameAddress(epoch: 3, opID: 4), payload: payload)
        guard case .control(let conn, let address, let received)? = p.server.nextEvent(timeout: .seconds(5)) else {
            Issue.record("no control event")
            return
        }
        #expect(conn == p.serverSide && address.epoch == 3 && address.opID == 4 && received == payload)
    }

    @Test(arguments: [false, true], [TransportEngine.DataPath.tcp, .shm])
    func dataLandsInThePostedBuffer(postReceiveFirst: Bool, path: TransportEngine.DataPath) throws {
        let p = try Self.pair(path: path)
        let source = (0 ..< 3_000_001).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        var target = [UInt8](repeating: 0, count: source.count)
        let address = FrameAddress(epoch: 1, opID: 2, tag: 3)
        try source.withUnsafeBytes { s in
            try target.withUnsafeMutableBytes { t in
                var receive: TransportRequest?
                if postReceiveFirst { receive = try p.server.postReceive(p.serverSide, address: address, into: t) }
                let send = try p.client.postSend(p.clientSide, address: address, bytes: s)
                if !postReceiveFirst { receive = try p.server.postReceive(p.serverSide, address: address, into: t) }
                #expect(p.server.wait(receive!, timeout: .seconds(10), interruptible: false) == .completed)
                #expect(p.client.wait(send, timeout: .seconds(10), interruptible: false) == .completed)
            }
        }
        #expect(target == source)
    }

    static let mismatches: [(FrameAddress, Int, TransportError.Code)] = [
        (FrameAddress(epoch: 4, opID: 2, tag: 3), 16, .staleEpoch),
        (FrameAddress(epoch: 6, opID: 2, tag: 3), 16, .epochMismatch),
        (FrameAddress(epoch: 5, opID: 1, tag: 3), 16, .opMismatch),
        (FrameAddress(epoch: 5, opID: 2, tag: 9), 16, .tagMismatch),
        (FrameAddress(epoch: 5, opID: 2, tag: 3), 17, .lengthMismatch),
    ]

    @Test(arguments: 0 ..< mismatches.count, [TransportEngine.DataPath.tcp, .shm])
    func aFrameThatDoesNotMatchTheReceiveFailsItPrecisely(index: Int, path: TransportEngine.DataPath) throws {
        let (sent, length, code) = Self.mismatches[index]
        let p = try Self.pair(path: path)
        let bystander = try p.client.connect(host: "127.0.0.1", port: p.port, timeout: .seconds(5))
        guard case .accepted(let bystanderServerSide)? = p.server.nextEvent(timeout: .seconds(5)) else { throw TestFailure("no accept") }
        let payload = [UInt8](repeating: 1, count: length)
        var target = [UInt8](repeating: 0, count: 16)
        try payload.withUnsafeBytes { s in
            try target.withUnsafeMutableBytes { t in
                let receive = try p.server.postReceive(p.serverSide, address: FrameAddress(epoch: 5, opID: 2, tag: 3), into: t)
                let send = try p.client.postSend(p.clientSide, address: sent, bytes: s)
                #expect(p.server.wait(receive, timeout: .seconds(5), interruptible: false) == .failed(TransportError(code: code)))
                _ = p.client.wait(send, timeout: .seconds(5), interruptible: false)
            }
        }
        #expect(target == [UInt8](repeating: 0, count: 16), "no byte of a mismatched frame is written")
        guard case .failed(let conn, let error)? = p.server.nextEvent(timeout: .seconds(5)) else { throw TestFailure("no failure event") }
        #expect(conn == p.serverSide && error.code == code)
        // The sender sees its connection closed; the other connection still works.
        guard case .failed(let senderConn, _)? = p.client.nextEvent(timeout: .seconds(5)) else { throw TestFailure("sender not told") }
        #expect(senderConn == p.clientSide)
        try p.client.sendControl(bystander, address: FrameAddress(epoch: 0, opID: 0), payload: [42])
        guard case .control(let c, _, let bytes)? = p.server.nextEvent(timeout: .seconds(5)) else { throw TestFailure("bystander starved") }
        #expect(c == bystanderServerSide && bytes == [42])
    }

    static let malformed: [([UInt8], TransportError.Code)] = [
        (header(magic: 0xDEAD_BEEF, type: 1, length: 0), .badMagic),
        (header(version: 9, type: 1, length: 0), .badVersion),
        (header(type: 77, length: 0), .badType),
        (header(type: 1, flags: 1, length: 0), .badFlags),
        (header(type: 1, length: 0xFFFF_FFF0), .controlTooLarge),
        (header(type: 3, length: 5), .badLength),
        (header(type: 9, length: 8, opID: 1), .badLength), // a fence is empty
        (header(type: 9, length: 0), .unexpectedControl), // a fence names an operation
        (header(type: 10, length: 0, opID: 1), .unexpectedControl), // an answer to a fence nobody sent
    ]

    @Test(arguments: 0 ..< malformed.count)
    func malformedHeadersCloseTheConnectionWithAClearError(index: Int) throws {
        let (bytes, code) = Self.malformed[index]
        let server = try TransportEngine(settings: Self.settings)
        let port = try server.listen(host: "127.0.0.1", port: 0)
        let good = try RawSocket(port: port)
        let bad = try RawSocket(port: port)
        var accepted: [ConnectionID] = []
        while accepted.count < 2, case .accepted(let c)? = server.nextEvent(timeout: .seconds(5)) { accepted.append(c) }
        bad.send(bytes)
        guard case .failed(_, let error)? = server.nextEvent(timeout: .seconds(5)) else { throw TestFailure("no failure") }
        #expect(error.code == code)
        #expect(error.isProtocolViolation)
        #expect(bad.closedByPeer(timeoutMilliseconds: 5000))
        // The well-behaved client is unaffected.
        good.send(header(type: 1, length: 2) + [7, 8])
        guard case .control(_, _, let payload)? = server.nextEvent(timeout: .seconds(5)) else { throw TestFailure("good client starved") }
        #expect(payload == [7, 8])
    }

    /// A peer that sends control frames faster than the owner takes them is cut off at the event
    /// queue's bound; what was queued before stays deliverable, and the owner learns why.
    @Test func aFloodingPeerIsCutOffAtTheEventQueueBound() throws {
        var settings = Self.settings
        settings.maxQueuedEvents = 8
        let p = try Self.pair(settings: settings)
        for i in 0 ..< 40 { try? p.client.sendControl(p.clientSide, address: FrameAddress(epoch: 1, opID: UInt64(i)), payload: [UInt8(i)]) }
        // The client sees its connection closed by the server.
        var clientSawClose = false
        let deadline = ContinuousClock.now + .seconds(10)
        while !clientSawClose && ContinuousClock.now < deadline {
            if case .failed(let connection, _)? = p.client.nextEvent(timeout: .milliseconds(100)), connection == p.clientSide { clientSawClose = true }
        }
        #expect(clientSawClose, "the flooding connection was not closed")
        var controls = 0
        var failure: TransportError?
        while let event = p.server.nextEvent(timeout: .milliseconds(200)) {
            switch event {
            case .control(let connection, _, _) where connection == p.serverSide: controls += 1
            case .failed(let connection, let error) where connection == p.serverSide: failure = error
            default: break
            }
        }
        #expect(controls <= 8, "at most the bound was queued: \(controls)")
        #expect(failure?.code == .tooManyQueued, "\(String(describing: failure))")
    }

    @Test func aSilentPeerFailsWithIdleTimeout() throws {
        let server = try TransportEngine(settings: TransportSettings(heartbeatInterval: .milliseconds(50),
                                                                     idleTimeout: .milliseconds(300)))
        let port = try server.listen(host: "127.0.0.1", port: 0)
        let silent = try RawSocket(port: port)
        guard case .accepted? = server.nextEvent(timeout: .seconds(5)) else { throw TestFailure("no accept") }
        // The 5 s deadline bounds it; how fast it fails is a timing, not something to assert.
        guard case .failed(_, let error)? = server.nextEvent(timeout: .seconds(5)) else { throw TestFailure("never timed out") }
        #expect(error.code == .idleTimeout)
        #expect(silent.closedByPeer(timeoutMilliseconds: 2000))
    }

    /// A failure found by a system call names the call and its errno: a peer's reset is `recv`'s
    /// ECONNRESET, a peer's close is `recv` reading the end of the stream.
    @Test(arguments: [true, false])
    func aPeersResetOrCloseNamesTheCallThatFoundIt(reset: Bool) throws {
        let server = try TransportEngine(settings: Self.settings)
        let port = try server.listen(host: "127.0.0.1", port: 0)
        let peer = try RawSocket(port: port)
        guard case .accepted? = server.nextEvent(timeout: .seconds(5)) else { throw TestFailure("no accept") }
        peer.send(header(type: 1, length: 8)) // half a control frame: the reader is mid-frame
        if reset { peer.reset() } else { shutdown(peer.fd, Int32(SHUT_WR)) }
        guard case .failed(_, let error)? = server.nextEvent(timeout: .seconds(5)) else { throw TestFailure("no failure") }
        #expect(error.code == .peerClosed)
        #expect(error.systemCall == "recv")
        #expect(error.systemErrno == (reset ? ECONNRESET : 0), "\(error)")
        if reset { #expect(error.description.contains("recv: Connection reset by peer"), "\(error)") }
    }

    /// Hang suspicion learns each sender's rhythm: a sender whose heartbeats come ever later (a
    /// process slowing under load: gaps of 0.3 s up to 1.5 s, each within four of the longest before
    /// it) is kept, though its later gaps are past four times the starting rhythm; one that kept a
    /// 100 ms rhythm and then falls silent is failed long before the 30 s idle timeout.
    @Test func hangSuspicionFollowsTheSendersRhythm() throws {
        let server = try TransportEngine(settings: TransportSettings(heartbeatInterval: .milliseconds(100), idleTimeout: .seconds(30),
                                                                     suspicionMultiple: 4, suspicionMinimum: .milliseconds(100)))
        let port = try server.listen(host: "127.0.0.1", port: 0)
        let steady = try RawSocket(port: port)
        guard case .accepted(let steadyID)? = server.nextEvent(timeout: .seconds(5)) else { throw TestFailure("no accept") }
        for _ in 0 ..< 20 {
            steady.send(header(type: 3, length: 0))
            usleep(100_000)
        }
        let silentSince = ContinuousClock.now
        guard case .failed(steadyID, let error)? = server.nextEvent(timeout: .seconds(30)) else { throw TestFailure("the silent one was never failed") }
        #expect(error.code == .idleTimeout)
        #expect(ContinuousClock.now - silentSince < .seconds(10), "failed only at the idle timeout, not on suspicion")

        let slowing = try RawSocket(port: port)
        guard case .accepted? = server.nextEvent(timeout: .seconds(5)) else { throw TestFailure("no accept") }
        for gap in [300, 500, 700, 900, 1_100, 1_300, 1_500] {
            slowing.send(header(type: 3, length: 0))
            if let event = server.nextEvent(timeout: .milliseconds(gap)) { Issue.record("a slowing sender was taken for a hung one: \(event)") }
        }
        slowing.send(header(type: 3, length: 0))
        #expect(server.nextEvent(timeout: .milliseconds(100)) == nil)
    }

    /// A probe asks for a sign of life within a deadline: a silent peer (a raw socket) fails with
    /// `idleTimeout` at about the deadline, long before the 30 s idle timeout, and what the probe sent
    /// is a probe frame; an engine whose heartbeats come every 10 s but whose owner waits in it answers
    /// every probe at once, so its connection lives on the answers alone.
    @Test func aProbeFailsASilentPeerFastAndAnEngineAnswersIt() throws {
        let prober = try TransportEngine(settings: TransportSettings(heartbeatInterval: .milliseconds(100), idleTimeout: .seconds(30)))
        let port = try prober.listen(host: "127.0.0.1", port: 0)
        let silent = try RawSocket(port: port)
        guard case .accepted(let silentID)? = prober.nextEvent(timeout: .seconds(5)) else { throw TestFailure("no accept") }
        let probed = ContinuousClock.now
        try prober.probe(silentID, answerWithin: .milliseconds(200))
        guard case .failed(silentID, let error)? = prober.nextEvent(timeout: .seconds(30)) else { throw TestFailure("the silent one was never failed") }
        let took = ContinuousClock.now - probed
        #expect(error.code == .idleTimeout)
        #expect(took >= .milliseconds(150) && took < .seconds(3), "failed after \(took), not at the probe's deadline")
        var received = [UInt8](repeating: 0, count: 1024) // the probe, perhaps among heartbeats (empty frames too)
        let got = recv(silent.fd, &received, received.count, Int32(MSG_DONTWAIT))
        let types = stride(from: 0, to: max(0, got) - 31, by: 32).map { received[$0 + 5] }
        #expect(types.contains(5), "frame types on the wire: \(types)")

        let answerer = try TransportEngine(settings: TransportSettings(heartbeatInterval: .seconds(10), idleTimeout: .seconds(30)))
        _ = try answerer.connect(host: "127.0.0.1", port: port, timeout: .seconds(5))
        guard case .accepted(let answererID)? = prober.nextEvent(timeout: .seconds(5)) else { throw TestFailure("no accept") }
        let owner = JoinableThread { _ = answerer.nextEvent(timeout: .seconds(4)) } // waiting, it serves its connections
        defer { owner.join() }
        for _ in 0 ..< 8 {
            try prober.probe(answererID, answerWithin: .milliseconds(200))
            if let event = prober.nextEvent(timeout: .milliseconds(250)) { Issue.record("an answering engine was failed: \(event)") }
        }
    }

    /// A frame sent for later is not written until the connection's next frame (then both leave in
    /// order), a flush, or the heartbeat timer, which sends it instead of a heartbeat; a newer one
    /// replaces it while it waits.
    @Test func aFrameSentForLaterLeavesWithTheNextFrameAFlushOrTheHeartbeat() throws {
        // No heartbeat within the test's first part: a frame that arrives was written by a call.
        let quiet = try Self.pair(settings: TransportSettings(heartbeatInterval: .seconds(20), idleTimeout: .seconds(60),
                                                              maxControlBytes: 4096, spinWait: .zero))
        func received(_ p: Pair) -> [UInt8]? {
            guard case .control(_, _, let payload)? = p.server.nextEvent(timeout: .seconds(5)) else { return nil }
            return payload
        }
        func nothingArrives(_ p: Pair) -> Bool { p.server.nextEvent(timeout: .milliseconds(200)) == nil }
        try quiet.client.sendControlLater(quiet.clientSide, address: FrameAddress(epoch: 1, opID: 0), payload: [1])
        #expect(nothingArrives(quiet), "written at once")
        try quiet.client.sendControl(quiet.clientSide, address: FrameAddress(epoch: 1, opID: 0), payload: [2])
        #expect(received(quiet) == [1] && received(quiet) == [2])
        try quiet.client.sendControlLater(quiet.clientSide, address: FrameAddress(epoch: 1, opID: 0), payload: [3])
        quiet.client.flush(quiet.clientSide)
        #expect(received(quiet) == [3])
        quiet.client.flush(quiet.clientSide) // nothing queued: nothing sent
        try quiet.client.sendControlLater(quiet.clientSide, address: FrameAddress(epoch: 1, opID: 0), payload: [4])
        try quiet.client.sendControlLater(quiet.clientSide, address: FrameAddress(epoch: 1, opID: 0), payload: [5]) // replaces [4]
        quiet.client.flush(quiet.clientSide)
        #expect(received(quiet) == [5])
        #expect(nothingArrives(quiet), "the replaced frame or an empty flush was sent")
        // With heartbeats due every 100 ms, the heartbeat timer sends it without any call.
        let beating = try Self.pair()
        try beating.client.sendControlLater(beating.clientSide, address: FrameAddress(epoch: 1, opID: 0), payload: [4])
        #expect(received(beating) == [4])
    }

    /// A data frame posted to wait for the next one (a pair's token ahead of its data) is not
    /// written by its post: it leaves, in order, with the connection's next frame, at a flush, or
    /// with the heartbeat; a control frame sent for later after it does not replace it.
    @Test func aDataFramePostedWithTheNextLeavesWithItAFlushOrTheHeartbeat() throws {
        let quiet = try Self.pair(settings: TransportSettings(heartbeatInterval: .seconds(20), idleTimeout: .seconds(60),
                                                              maxControlBytes: 4096, spinWait: .zero))
        let words: [UInt64] = [0x0123_4567_89AB_CDEF, 0xFEDC_BA98_7654_3210, 42, 7]
        var landed = [UInt64](repeating: 0, count: 4)
        func address(_ tag: Int) -> FrameAddress { FrameAddress(epoch: 1, opID: 1, tag: UInt32(tag)) }
        try words.withUnsafeBytes { sent in
            try landed.withUnsafeMutableBytes { into in
                func slot(_ i: Int) -> UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(rebasing: into[i * 8 ..< i * 8 + 8]) }
                func word(_ i: Int) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: sent[i * 8 ..< i * 8 + 8]) }
                let receives = try (0 ..< 3).map { try quiet.server.postReceive(quiet.serverSide, address: address($0), into: slot($0)) }
                func arrived(_ i: Int, within: Duration) -> Bool {
                    quiet.server.wait(receives[i], timeout: within, interruptible: false) == .completed
                }
                // Held until the next data frame, which leaves with it; a frame that arrives meanwhile
                // (its readiness says the socket has room too) does not write it.
                let first = try quiet.client.postSend(quiet.clientSide, address: address(0), bytes: word(0), withNextFrame: true)
                try quiet.server.sendControl(quiet.serverSide, address: FrameAddress(epoch: 1, opID: 0), payload: [8])
                guard case .control(_, _, [8])? = quiet.client.nextEvent(timeout: .seconds(5)) else { throw TestFailure("the server's frame") }
                #expect(!arrived(0, within: .milliseconds(200)), "written at once")
                let second = try quiet.client.postSend(quiet.clientSide, address: address(1), bytes: word(1))
                #expect(arrived(0, within: .seconds(5)) && arrived(1, within: .seconds(5)))
                // Held past a control frame sent for later, until a flush.
                let third = try quiet.client.postSend(quiet.clientSide, address: address(2), bytes: word(2), withNextFrame: true)
                try quiet.client.sendControlLater(quiet.clientSide, address: FrameAddress(epoch: 1, opID: 0), payload: [9])
                #expect(!arrived(2, within: .milliseconds(200)), "written at once")
                quiet.client.flush(quiet.clientSide)
                #expect(arrived(2, within: .seconds(5)))
                guard case .control(_, _, [9])? = quiet.server.nextEvent(timeout: .seconds(5)) else { throw TestFailure("the control frame") }
                // Or the heartbeat takes it.
                let beating = try Self.pair()
                let fourthReceive = try beating.server.postReceive(beating.serverSide, address: address(3), into: slot(3))
                let fourth = try beating.client.postSend(beating.clientSide, address: address(3), bytes: word(3), withNextFrame: true)
                #expect(beating.server.wait(fourthReceive, timeout: .seconds(5), interruptible: false) == .completed)
                for (engine, send) in [(quiet.client, first), (quiet.client, second), (quiet.client, third), (beating.client, fourth)] {
                    #expect(engine.wait(send, timeout: .seconds(5), interruptible: false) == .completed)
                }
            }
        }
        #expect(landed == words)
    }

    /// The operation fence: a vouch before the fence is what the answer reports, and a fence
    /// before the vouch refuses it, for that operation and every later one of the epoch. The member's
    /// engine answers though its owner is computing (no thread waits in it): the I/O thread reads
    /// the fence at its tick.
    @Test func aFenceAndAVouchAreOrderedAndTheFenceIsAnsweredWhileTheOwnerComputes() throws {
        let p = try Self.pair()
        let (master, member) = (p.server, p.client)
        try member.vouch(p.clientSide, epoch: 4, opID: 3)
        func answer() throws -> (epoch: UInt64, opID: UInt64, vouched: Bool) {
            // Only the master waits: the member's engine answers on its own.
            guard case .fenceAnswered(p.serverSide, let epoch, let opID, let vouched)? = master.nextEvent(timeout: .seconds(5)) else {
                throw TestFailure("no answer to the fence")
            }
            return (epoch, opID, vouched)
        }
        try master.fence(p.serverSide, epoch: 4, opID: 3)
        #expect(try answer() == (4, 3, true))
        try member.vouch(p.clientSide, epoch: 4, opID: 4) // a fence at 3 that found 3 vouched fenced nothing
        try master.fence(p.serverSide, epoch: 4, opID: 6)
        #expect(try answer() == (4, 6, false))
        try member.vouch(p.clientSide, epoch: 4, opID: 5) // before the fence
        for opID: UInt64 in [6, 7, 100] {
            #expect(throws: TransportError(code: .fenced)) { try member.vouch(p.clientSide, epoch: 4, opID: opID) }
        }
        try master.fence(p.serverSide, epoch: 4, opID: 9)
        #expect(try answer() == (4, 9, false), "the earlier fence still stands")
        #expect(throws: TransportError(code: .fenced)) { try member.vouch(p.clientSide, epoch: 4, opID: 6) }
        try member.vouch(p.clientSide, epoch: 5, opID: 1) // a new epoch is not fenced
        try master.fence(p.serverSide, epoch: 5, opID: 1) // two fences outstanding: two answers
        try master.fence(p.serverSide, epoch: 5, opID: 2)
        #expect(try answer() == (5, 1, true))
        #expect(try answer() == (5, 2, false))
        #expect(throws: TransportError(code: .invalidArgument)) { try member.vouch(p.clientSide, epoch: 5, opID: 0) }
        #expect(master.nextEvent(timeout: .milliseconds(300)) == nil, "one answer per fence, and the connection lives")
    }

    /// A vouch that asks to have heard from the other end lately (a pair's one-hop commit): refused
    /// with `.outOfTouch` once the connection has been silent for longer, accepted again as soon as
    /// a frame arrives, and refused once the connection failed; a plain vouch ignores silence.
    @Test func aVouchThatAsksForRecentWordIsRefusedAfterSilenceOrAFailure() throws {
        var quietSettings = Self.settings // its heartbeats stay away for the whole test
        quietSettings.heartbeatInterval = .seconds(20)
        quietSettings.idleTimeout = .seconds(60)
        let master = try TransportEngine(settings: quietSettings)
        let port = try master.listen(host: "127.0.0.1", port: 0, path: .tcp)
        let member = try TransportEngine(settings: Self.settings)
        let memberSide = try member.connect(host: "127.0.0.1", port: port, timeout: .seconds(5), path: .tcp)
        guard case .accepted(let masterSide)? = master.nextEvent(timeout: .seconds(5)) else { throw TestFailure("no accept") }
        try member.vouch(memberSide, epoch: 1, opID: 1, heardWithin: .milliseconds(250)) // connected just now
        usleep(400_000)
        #expect(throws: TransportError(code: .outOfTouch)) { try member.vouch(memberSide, epoch: 1, opID: 2, heardWithin: .milliseconds(250)) }
        try member.vouch(memberSide, epoch: 1, opID: 2) // silence does not matter to a plain vouch
        try master.sendControl(masterSide, address: FrameAddress(epoch: 1, opID: 0), payload: [1])
        guard case .control? = member.nextEvent(timeout: .seconds(5)) else { throw TestFailure("the master's frame") }
        try member.vouch(memberSide, epoch: 1, opID: 3, heardWithin: .milliseconds(250))
        master.close(masterSide)
        guard case .failed? = member.nextEvent(timeout: .seconds(5)) else { throw TestFailure("the member never saw the close") }
        // Failed and reported, the connection is gone (before that report, `.outOfTouch`).
        #expect(throws: TransportError(code: .noSuchConnection)) { try member.vouch(memberSide, epoch: 1, opID: 4, heardWithin: .seconds(5)) }
    }

    /// A stranger's data-frame header used to pause its connection, which stopped the idle timer for
    /// good: one 32-byte header parked a descriptor forever. Now a data frame before any control frame
    /// fails the connection at once; one behind a control frame (a hello the owner has yet to judge)
    /// may wait, but the handshake deadline runs whatever a connection sends until it is admitted.
    @Test func aConnectionNotAdmittedIsClosedAtTheHandshakeDeadlineWhatEverItSends() throws {
        let server = try TransportEngine(settings: TransportSettings(heartbeatInterval: .milliseconds(50),
                                                                     idleTimeout: .seconds(30),
                                                                     handshakeTimeout: .milliseconds(300)))
        let port = try server.listen(host: "127.0.0.1", port: 0)
        let early = try RawSocket(port: port), parker = try RawSocket(port: port), beater = try RawSocket(port: port)
        var accepted: [ConnectionID] = []
        while accepted.count < 3, case .accepted(let c)? = server.nextEvent(timeout: .seconds(5)) { accepted.append(c) }
        early.send(header(type: 2, length: 1 << 20, epoch: 1, opID: 1)) // a data frame nobody asked for
        parker.send(header(type: 1, length: 1) + [7] + header(type: 2, length: 1 << 20, epoch: 1, opID: 1))
        var failures: [ConnectionID: TransportError.Code] = [:]
        let deadline = ContinuousClock.now + .seconds(10)
        while failures.count < 3 && ContinuousClock.now < deadline {
            beater.send(header(type: 3, length: 0)) // heartbeats only, every 50 ms
            if case .failed(let c, let error)? = server.nextEvent(timeout: .milliseconds(50)) { failures[c] = error.code }
        }
        #expect(failures == [accepted[0]: .unexpectedData, accepted[1]: .handshakeTimeout, accepted[2]: .handshakeTimeout],
                "well before the 30 s idle timeout")
        #expect(early.closedByPeer(timeoutMilliseconds: 2000) && parker.closedByPeer(timeoutMilliseconds: 2000)
                && beater.closedByPeer(timeoutMilliseconds: 2000))
    }

    /// Before admission a connection may send only small control frames; over every connection,
    /// control payloads share one budget; and past the bound on connections still identifying
    /// themselves, the oldest is closed. Each failure names its cause, and admitted ones go on.
    @Test func floodsOfUnidentifiedConnectionsAndUnfinishedFramesAreBounded() throws {
        let settings = TransportSettings(heartbeatInterval: .milliseconds(50), idleTimeout: .seconds(30),
                                         handshakeTimeout: .seconds(30), maxUnadmitted: 3, maxBufferedControlBytes: 64 << 10)
        let server = try TransportEngine(settings: settings)
        let port = try server.listen(host: "127.0.0.1", port: 0)
        func accept() throws -> ConnectionID {
            let event = server.nextEvent(timeout: .seconds(5))
            guard case .accepted(let c)? = event else { throw TestFailure("no accept: \(String(describing: event))") }
            return c
        }
        func failure() throws -> (ConnectionID, TransportError.Code) {
            guard case .failed(let c, let error)? = server.nextEvent(timeout: .seconds(5)) else { throw TestFailure("no failure") }
            return (c, error.code)
        }
        // A large control frame before admission.
        let big = try RawSocket(port: port)
        let bigSide = try accept()
        big.send(header(type: 1, length: 4097))
        #expect(try failure() == (bigSide, .controlTooLarge))
        // Two admitted members start 40 KiB frames and stop half way: the second passes the budget.
        let a = try RawSocket(port: port), b = try RawSocket(port: port)
        let aSide = try accept(), bSide = try accept()
        server.admit(aSide, allowData: false)
        server.admit(bSide, allowData: false)
        a.send(header(type: 1, length: 40 << 10) + [UInt8](repeating: 1, count: 100))
        usleep(50_000)
        b.send(header(type: 1, length: 40 << 10) + [UInt8](repeating: 2, count: 100))
        #expect(try failure() == (bSide, .controlBudget))
        // The first one finishes its frame: delivered whole.
        a.send([UInt8](repeating: 1, count: (40 << 10) - 100))
        guard case .control(let from, _, let payload)? = server.nextEvent(timeout: .seconds(5)) else { throw TestFailure("no frame") }
        #expect(from == aSide && payload == [UInt8](repeating: 1, count: 40 << 10))
        // Four connections that never identify themselves: the first is closed when the fourth arrives.
        var silent: [RawSocket] = []
        var sides: [ConnectionID] = []
        for _ in 0 ..< 3 {
            silent.append(try RawSocket(port: port))
            sides.append(try accept())
        }
        silent.append(try RawSocket(port: port))
        _ = try accept()
        #expect(try failure() == (sides[0], .handshakeFlood))
        #expect(silent[0].closedByPeer(timeoutMilliseconds: 2000))
        a.send(header(type: 1, length: 1) + [5])
        guard case .control(_, _, let last)? = server.nextEvent(timeout: .seconds(5)) else { throw TestFailure("the member was cut off") }
        #expect(last == [5])
    }

    /// The reader reads ahead (8 KiB) and a payload's rest in place, and stops at a short read once
    /// what it read is parsed: frames of every size (data around the read-ahead's size, control,
    /// heartbeats) land intact whether the whole stream comes at once with the receives posted (0) or
    /// posted after it arrived (1: the reader stops at the first data frame with frames read ahead
    /// behind it), or trickles in pieces that split headers and payloads anywhere (2).
    @Test(arguments: 0 ..< 3)
    func framesArriveIntactHoweverTheStreamIsSplit(mode: Int) throws {
        let server = try TransportEngine(settings: Self.settings)
        let port = try server.listen(host: "127.0.0.1", port: 0)
        let sender = try RawSocket(port: port)
        guard case .accepted(let side)? = server.nextEvent(timeout: .seconds(5)) else { throw TestFailure("no accept") }
        server.admit(side, allowData: true)
        func bytes(_ frame: Int, _ count: Int) -> [UInt8] { (0 ..< count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ frame &* 7 &+ 1) } }
        let dataLengths = [1, 31, 32, 33, 4096, 8128, 8160, 8192, 8193, 70_001], controlLengths = [0, 5, 32, 100, 4096]
        var stream: [UInt8] = []
        for (i, length) in dataLengths.enumerated() {
            stream += header(type: 2, tag: UInt32(i), length: UInt32(length), epoch: 1, opID: 1) + bytes(i, length)
            stream += header(type: 3, length: 0) // a heartbeat between frames
            if i < controlLengths.count {
                stream += header(type: 1, length: UInt32(controlLengths[i]), epoch: 2, opID: UInt64(i)) + bytes(100 + i, controlLengths[i])
            }
        }
        var targets = dataLengths.map { [UInt8](repeating: 0, count: $0) }
        var requests: [TransportRequest] = []
        func postReceives() throws {
            for i in dataLengths.indices {
                requests.append(try targets[i].withUnsafeMutableBytes {
                    try server.postReceive(side, address: FrameAddress(epoch: 1, opID: 1, tag: UInt32(i)), into: $0)
                })
            }
        }
        if mode != 1 { try postReceives() }
        if mode == 2 {
            let pieces = [1, 5, 31, 33, 64, 1000, 7]
            var at = 0, next = 0
            while at < stream.count {
                let end = min(stream.count, at + pieces[next % pieces.count])
                sender.send(Array(stream[at ..< end]))
                at = end
                next += 1
                if next % 3 == 0 { usleep(200) } // let the reader catch up mid-frame now and then
            }
        } else {
            sender.send(stream)
        }
        if mode == 1 {
            usleep(50_000) // the whole stream waits in the kernel behind the first data frame
            try postReceives()
        }
        for request in requests { #expect(server.wait(request, timeout: .seconds(10), interruptible: false) == .completed) }
        for i in dataLengths.indices {
            let intact = targets[i] == bytes(i, dataLengths[i])
            #expect(intact, "data frame \(i) (\(dataLengths[i]) bytes)")
        }
        for i in controlLengths.indices {
            guard case .control(_, let address, let payload)? = server.nextEvent(timeout: .seconds(5)) else {
                throw TestFailure("control frame \(i) missing")
            }
            let intact = address.opID == UInt64(i) && payload == bytes(100 + i, controlLengths[i])
            #expect(intact, "control frame \(i) (\(controlLengths[i]) bytes)")
        }
    }

    /// An admitted connection keeps working past the deadline; one admitted without data refuses a
    /// data frame at once, also one that was already waiting when it was admitted.
    @Test func admittedConnectionsOutliveTheDeadlineAndDataIsRefusedWhereNoneBelongs() throws {
        let settings = TransportSettings(heartbeatInterval: .milliseconds(50), idleTimeout: .seconds(30),
                                         handshakeTimeout: .milliseconds(300))
        let server = try TransportEngine(settings: settings)
        let port = try server.listen(host: "127.0.0.1", port: 0)
        let member = try RawSocket(port: port), early = try RawSocket(port: port), late = try RawSocket(port: port)
        var accepted: [ConnectionID] = []
        while accepted.count < 3, case .accepted(let c)? = server.nextEvent(timeout: .seconds(5)) { accepted.append(c) }
        early.send(header(type: 1, length: 1) + [7] + header(type: 2, length: 8, epoch: 1, opID: 1))
        guard case .control? = server.nextEvent(timeout: .seconds(5)) else { throw TestFailure("no hello") }
        usleep(100_000) // the early frame waits behind its hello until the owner judges it
        for connection in accepted { server.admit(connection, allowData: false) }
        guard case .failed(_, let error)? = server.nextEvent(timeout: .seconds(5)) else { throw TestFailure("the waiting data frame was kept") }
        #expect(error.code == .unexpectedData && error.isProtocolViolation)
        late.send(header(type: 2, length: 8, epoch: 1, opID: 1))
        guard case .failed(_, let second)? = server.nextEvent(timeout: .seconds(5)) else { throw TestFailure("the late data frame was kept") }
        #expect(second.code == .unexpectedData)
        usleep(600_000) // twice the handshake deadline
        member.send(header(type: 1, length: 1) + [9])
        guard case .control(_, _, let payload)? = server.nextEvent(timeout: .seconds(5)) else { throw TestFailure("the admitted member was closed") }
        #expect(payload == [9])
        #expect(early.closedByPeer(timeoutMilliseconds: 2000) && late.closedByPeer(timeoutMilliseconds: 2000))
    }

    /// A connection paused on a data frame that arrived before its receive was posted is still timed
    /// out once its sender goes silent (its heartbeats stop reaching the kernel behind the frame);
    /// while they keep coming it is kept.
    @Test func aConnectionPausedOnAnEarlyFrameStillTimesOutWhenItsSenderFallsSilent() throws {
        let server = try TransportEngine(settings: TransportSettings(heartbeatInterval: .milliseconds(50),
                                                                     idleTimeout: .milliseconds(300)))
        let port = try server.listen(host: "127.0.0.1", port: 0)
        let sender = try RawSocket(port: port)
        guard case .accepted(let side)? = server.nextEvent(timeout: .seconds(5)) else { throw TestFailure("no accept") }
        sender.send(header(type: 2, length: 64, epoch: 1, opID: 1)) // nobody posted a receive for it
        let alive = ContinuousClock.now + .milliseconds(900)
        while ContinuousClock.now < alive {
            sender.send(header(type: 3, length: 0))
            if case .failed(_, let error)? = server.nextEvent(timeout: .milliseconds(50)) {
                Issue.record("failed while its heartbeats arrived: \(error)")
                return
            }
        }
        guard case .failed(let failed, let error)? = server.nextEvent(timeout: .seconds(10)) else {
            Issue.record("a silent paused connection was kept")
            return
        }
        #expect(failed == side && error.code == .idleTimeout)
    }

    /// Once the owner closes a connection nothing of it follows: control frames it had already sent
    /// and queued are dropped, not handed over after the close.
    @Test func noEventOfAConnectionFollowsItsClose() throws {
        let p = try Self.pair()
        for i in 0 ..< 3 { try p.client.sendControl(p.clientSide, address: FrameAddress(epoch: 1, opID: 1), payload: [UInt8(i)]) }
        guard case .control(_, _, let first)? = p.server.nextEvent(timeout: .seconds(5)) else { throw TestFailure("no frame") }
        #expect(first == [0])
        usleep(200_000) // the other two are queued by now
        p.server.close(p.serverSide)
        let next = p.server.nextEvent(timeout: .milliseconds(300))
        #expect(next == nil, "\(String(describing: next))")
    }

    @Test func heartbeatsKeepAnIdleConnectionAlive() throws {
        let fast = TransportSettings(heartbeatInterval: .milliseconds(50), idleTimeout: .milliseconds(400))
        let p = try Self.pair(settings: fast)
        #expect(p.server.nextEvent(timeout: .milliseconds(1500)) == nil, "no failure while both sides beat")
        try p.client.sendControl(p.clientSide, address: FrameAddress(epoch: 0, opID: 0), payload: [1])
        guard case .control? = p.server.nextEvent(timeout: .seconds(5)) else { throw TestFailure("connection died") }
    }

    @Test func anOwnerThatDoesNotWaitForLongerThanTheIdleTimeoutKeepsItsConnections() throws {
        // Nobody waits in either engine: the I/O threads must still read the heartbeats (at their
        // ticks), or the idle deadline would fail a healthy connection.
        let fast = TransportSettings(heartbeatInterval: .milliseconds(50), idleTimeout: .milliseconds(400))
        let p = try Self.pair(settings: fast)
        usleep(1_500_000)
        try p.client.sendControl(p.clientSide, address: FrameAddress(epoch: 0, opID: 0), payload: [7])
        guard case .control(let conn, _, let payload)? = p.server.nextEvent(timeout: .seconds(5)) else {
            throw TestFailure("the connection died while its owner computed")
        }
        #expect(conn == p.serverSide && payload == [7])
    }

    @Test func requestsInFlightProgressWhileTheirOwnersCompute() throws {
        // 16 MiB through 64 KiB socket buffers while neither side waits: only the I/O threads can move
        // it (the sender's flushing, the receiver's reading), and what their ticks alone would move
        // (a buffer's worth each) falls far short. Afterwards a zero-timeout wait must find both done.
        let small = TransportSettings(heartbeatInterval: .milliseconds(100), idleTimeout: .seconds(5), socketBufferBytes: 64 << 10)
        let p = try Self.pair(settings: small)
        let count = 16 << 20
        var source = [UInt8](repeating: 0, count: count)
        source.withUnsafeMutableBytes { s in
            let words = s.bindMemory(to: UInt64.self)
            for i in words.indices { words[i] = UInt64(i) &* 0x9E37_79B9_7F4A_7C15 }
        }
        var target = [UInt8](repeating: 0, count: count)
        let address = FrameAddress(epoch: 1, opID: 1, tag: 1)
        try source.withUnsafeBytes { s in
            try target.withUnsafeMutableBytes { t in
                let receive = try p.server.postReceive(p.serverSide, address: address, into: t)
                let send = try p.client.postSend(p.clientSide, address: address, bytes: s)
                usleep(2_000_000)
                #expect(p.server.wait(receive, timeout: .zero, interruptible: false) == .completed)
                #expect(p.client.wait(send, timeout: .zero, interruptible: false) == .completed)
                // Not finished (a failure above): let them end before the buffers go away.
                _ = p.server.wait(receive, timeout: .seconds(60), interruptible: false)
                _ = p.client.wait(send, timeout: .seconds(60), interruptible: false)
            }
        }
        #expect(memcmp(source, target, count) == 0)
    }

    @Test func threadsWaitingInOneEngineEachGetTheirOwnFrames() throws {
        // Two threads wait in the same engine on different connections; whichever harvests a frame
        // serves it, and the other must still be woken with its own data, round after round.
        let server = try TransportEngine(settings: Self.settings)
        let port = try server.listen(host: "127.0.0.1", port: 0)
        let clients = try (0 ..< 2).map { _ in try TransportEngine(settings: Self.settings) }
        let clientSides = try clients.map { try $0.connect(host: "127.0.0.1", port: port, timeout: .seconds(5)) }
        var serverSides: [ConnectionID] = []
        while serverSides.count < 2 {
            guard case .accepted(let conn)? = server.nextEvent(timeout: .seconds(5)) else { throw TestFailure("no accept") }
            serverSides.append(conn)
        }
        // Which accepted connection belongs to which client: each says its index.
        for (i, client) in clients.enumerated() {
            try client.sendControl(clientSides[i], address: FrameAddress(epoch: 0, opID: 0), payload: [UInt8(i)])
        }
        var owner: [ConnectionID: Int] = [:]
        while owner.count < 2 {
            guard case .control(let conn, _, let payload)? = server.nextEvent(timeout: .seconds(5)) else { throw TestFailure("no hello") }
            owner[conn] = Int(payload[0])
        }
        let rounds = 200, bytes = 4096
        let results = Mutex([[UInt8]](repeating: [], count: 2))
        let failures = Mutex([String]())
        let threads = serverSides.map { conn in
            let index = owner[conn]!
            return JoinableThread {
                var buffer = [UInt8](repeating: 0, count: bytes)
                var sum = [UInt8](repeating: 0, count: bytes)
                for round in 0 ..< rounds {
                    buffer.withUnsafeMutableBytes { b in
                        do {
                            let r = try server.postReceive(conn, address: FrameAddress(epoch: 1, opID: UInt64(round), tag: UInt32(index)), into: b)
                            let outcome = server.wait(r, timeout: .seconds(20), interruptible: false)
                            if outcome != .completed { failures.withLock { $0.append("thread \(index) round \(round): \(outcome)") } }
                        } catch {
                            failures.withLock { $0.append("thread \(index) round \(round): \(error)") }
                        }
                    }
                    for i in 0 ..< bytes { sum[i] &+= buffer[i] }
                }
                results.withLock { $0[index] = sum }
            }
        }
        var expected = [[UInt8]](repeating: [UInt8](repeating: 0, count: bytes), count: 2)
        for round in 0 ..< rounds {
            for (index, client) in clients.enumerated() {
                let frame = (0 ..< bytes).map { UInt8(truncatingIfNeeded: $0 &* 3 &+ round &* 17 &+ index &* 101) }
                for i in 0 ..< bytes { expected[index][i] &+= frame[i] }
                try frame.withUnsafeBytes { f in
                    let send = try client.postSend(clientSides[index], address: FrameAddress(epoch: 1, opID: UInt64(round), tag: UInt32(index)), bytes: f)
                    #expect(client.wait(send, timeout: .seconds(20), interruptible: false) == .completed)
                }
            }
        }
        threads.forEach { $0.join() }
        #expect(failures.withLock { $0 } == [])
        #expect(results.withLock { $0 } == expected)
    }

    @Test func waitsHonourTheirDeadlineAndCloseCancels() throws {
        let p = try Self.pair()
        var target = [UInt8](repeating: 0, count: 8)
        try target.withUnsafeMutableBytes { t in
            let receive = try p.server.postReceive(p.serverSide, address: FrameAddress(epoch: 1, opID: 1), into: t)
            let started = ContinuousClock.now
            #expect(p.server.wait(receive, timeout: .milliseconds(100), interruptible: false) == .timedOut)
            #expect(ContinuousClock.now - started >= .milliseconds(90))
            p.server.close(p.serverSide)
            #expect(p.server.wait(receive, timeout: .seconds(5), interruptible: false) == .failed(TransportError(code: .cancelled)))
        }
        #expect(throws: TransportError(code: .noSuchConnection)) {
            try p.server.sendControl(p.serverSide, address: FrameAddress(epoch: 0, opID: 0), payload: [])
        }
    }

    @Test func aFinishedRequestsOutcomeIsTakenWithoutWaitingAndOneInFlightIsLeftAlone() throws {
        let p = try Self.pair()
        let source = (0 ..< 4096).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        var target = [UInt8](repeating: 0, count: source.count)
        var lost = [UInt8](repeating: 0, count: 8)
        let address = FrameAddress(epoch: 1, opID: 1, tag: 1)
        try source.withUnsafeBytes { s in
            try target.withUnsafeMutableBytes { t in
                let receive = try p.server.postReceive(p.serverSide, address: address, into: t)
                #expect(p.server.outcomeIfFinished(receive) == nil) // nothing was sent
                #expect(!receive.isFinished)
                let send = try p.client.postSend(p.clientSide, address: address, bytes: s)
                #expect(p.client.outcomeIfFinished(send) == .completed) // written inline: done at once
                #expect(send.isFinished)
                #expect(p.server.wait(receive, timeout: .seconds(5), interruptible: false) == .completed)
                #expect(p.server.outcomeIfFinished(receive) == .completed) // taken before: the same outcome
            }
        }
        #expect(target == source)
        try lost.withUnsafeMutableBytes { t in
            let receive = try p.server.postReceive(p.serverSide, address: FrameAddress(epoch: 1, opID: 2), into: t)
            p.server.close(p.serverSide) // cancels it: its failure, not a success, is what it finished with
            let deadline = ContinuousClock.now + .seconds(5)
            var outcome = p.server.outcomeIfFinished(receive)
            while outcome == nil, ContinuousClock.now < deadline {
                usleep(1000)
                outcome = p.server.outcomeIfFinished(receive)
            }
            #expect(outcome == .failed(TransportError(code: .cancelled)))
            if outcome == nil { _ = p.server.wait(receive, timeout: .seconds(30), interruptible: false) }
        }
    }

    @Test func connectingToAClosedPortFailsFastNamingTheReason() throws {
        let engine = try TransportEngine(settings: Self.settings)
        let port = try { () throws -> UInt16 in
            let probe = try TransportEngine(settings: Self.settings)
            return try probe.listen(host: "127.0.0.1", port: 0)
        }() // the probe engine is gone, so nobody listens there any more
        let started = ContinuousClock.now
        #expect(throws: TransportError(code: .connectFailed, detail: "connect 127.0.0.1:\(port): Connection refused")) {
            _ = try engine.connect(host: "127.0.0.1", port: port, timeout: .seconds(30))
        }
        #expect(ContinuousClock.now - started < .seconds(20), "a refused connection fails at once, not at the deadline")
    }
}


/// A thread the test can join (the engine's callers are plain threads, not Swift tasks).
final class JoinableThread: @unchecked Sendable {
    private var handle = pthread_t()
    private let body: () -> Void

    init(_ body: @escaping @Sendable () -> Void) {
        self.body = body
        let box = Unmanaged.passRetained(self)
        let result = pthread_create(&handle, nil, { raw in
            let thread = Unmanaged<JoinableThread>.fromOpaque(raw!).takeRetainedValue()
            thread.body()
            return nil
        }, box.toOpaque())
        precondition(result == 0, "pthread_create failed: \(result)")
    }

    func join() { pthread_join(handle, nil) }
}
