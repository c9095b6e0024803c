import ArgumentParser
import CChorusTransport
import ChorusProtocol
import ChorusTransport
#if canImport(Glibc)
import Glibc
#endif

/// Tries to get into a master with wrong secrets, as an outsider would: each attempt dials, runs the
/// handshake with a fresh random secret and counts whether the master accepted its proof.
struct GuessSecret: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "guess-secret", abstract: "Authentication attempts with random wrong secrets against a master; counts any that got in.")

    @Option(help: "The master, HOST:PORT.") var master: String
    @Option(help: "Attempts to make.") var attempts = 10_000

    func run() throws {
        let (host, port) = try endpoint(master)
        let engine = try TransportEngine(settings: TransportSettings(heartbeatInterval: .seconds(1), idleTimeout: .seconds(10)))
        var accepted = 0, refused = 0, closed = 0
        var random = SystemRandomNumberGenerator()
        let started = ContinuousClock.now
        for _ in 0 ..< attempts {
            let guess = (0 ..< 32).map { _ in UInt8.random(in: .min ... .max, using: &random) }
            var handshake = ConnectorHandshake(secret: SharedSecret(guess))
            let connection = try engine.connect(host: host, port: port, timeout: .seconds(5))
            defer { engine.close(connection) }
            try engine.sendControl(connection, address: FrameAddress(epoch: 0, opID: 0), payload: handshake.opening.encoded())
            var outcome: Handshake?
            while outcome == nil, let payload = nextControl(engine, connection) {
                switch try Handshake(decoding: payload) {
                case .challenge(let nonce):
                    guard case .reply(let proof) = try handshake.receive(.challenge(nonce: nonce)) else { continue }
                    try engine.sendControl(connection, address: FrameAddress(epoch: 0, opID: 0), payload: proof.encoded())
                case let answer:
                    outcome = answer
                }
            }
            switch outcome {
            case .accepted?: accepted += 1
            case .refused?: refused += 1
            default: closed += 1
            }
        }
        let seconds = secondsSince(started)
        print("attempts \(attempts): got in \(accepted), refused \(refused), closed without an answer \(closed); \(Int(Double(attempts) / seconds)) attempts/s")
        if accepted > 0 { throw ExitCode.failure }
    }

    private func nextControl(_ engine: TransportEngine, _ connection: ConnectionID) -> [UInt8]? {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            switch engine.nextEvent(timeout: .milliseconds(100)) {
            case .control(let c, _, let payload)? where c == connection: return payload
            case .failed(let c, _)? where c == connection: return nil
            default: continue
            }
        }
        return nil
    }
}

/// Opens many connections that never identify themselves (silent, heartbeats only, a data-frame
/// header, a control frame trickled a byte at a time), reopens each one the target closes, and
/// samples the target's resident memory and descriptors every second, then while they recover.
struct Flood: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Floods a master's or peer's port with connections that never identify themselves; samples the target process.")

    @Option(help: "The target, HOST:PORT.") var target: String
    @Option(help: "The target's process id, to sample its memory and descriptors.") var pid: Int32?
    @Option(help: "Connections to hold open.") var connections = 2000
    @Option(help: "How long to flood, in seconds.") var seconds = 20
    @Option(help: "After the flood, how long to keep sampling the target, in seconds.") var recover = 8

    enum Kind: CaseIterable { case silent, heartbeats, dataHeader, trickle }

    struct Attacker {
        var fd: Int32 = -1
        /// False while the non-blocking connect is in progress: a target too busy to accept must not
        /// stall the flood, which would then never look at the connections it did open.
        var connected = false
        let kind: Kind
    }

    func run() throws {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        limit.rlim_cur = limit.rlim_max
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        let (host, port) = try endpoint(target)
        func sample(_ label: String) {
            guard let pid else { return }
            let r = Resources.current(pid: pid)
            print("\(label): target \(r.residentKiB / 1024) MiB resident, \(r.descriptors) descriptors")
        }
        sample("before")
        var attackers = (0 ..< connections).map { Attacker(kind: Kind.allCases[$0 % Kind.allCases.count]) }
        var reopened = 0
        let started = ContinuousClock.now
        var nextSample = started + .seconds(1)
        while ContinuousClock.now - started < .seconds(seconds) {
            for index in attackers.indices {
                let attacker = attackers[index]
                if attacker.fd < 0 {
                    attackers[index].fd = connectWithoutWaiting(host, port)
                } else if !attacker.connected {
                    switch connectOutcome(attacker.fd) {
                    case true?:
                        attackers[index].connected = true
                        greet(attacker)
                    case false?:
                        close(attacker.fd)
                        attackers[index].fd = -1
                    case nil: break
                    }
                } else if closedByTarget(attacker.fd) {
                    close(attacker.fd)
                    attackers[index] = Attacker(kind: attacker.kind)
                    reopened += 1
                } else {
                    tick(attacker)
                }
            }
            if ContinuousClock.now >= nextSample {
                let open = attackers.filter { $0.connected }.count
                sample("t=\((ContinuousClock.now - started).components.seconds) s, \(open) attacking connections open, \(reopened) closed by the target so far")
                nextSample += .seconds(1)
            }
            usleep(100_000)
        }
        for attacker in attackers where attacker.fd >= 0 { close(attacker.fd) }
        print("flood over: \(reopened) attacking connections were closed by the target")
        let stopped = ContinuousClock.now
        while ContinuousClock.now - stopped < .seconds(recover) {
            usleep(500_000)
            let elapsed = (secondsSince(stopped) * 10).rounded() / 10
            sample("t=+\(elapsed) s after")
        }
    }

    private func header(_ type: chorus_frame_type, length: UInt32) -> [UInt8] {
        var h = chorus_frame_header(type: UInt8(type.rawValue), flags: 0, tag: 0, length: length, epoch: 1, op_id: 1)
        var bytes = [UInt8](repeating: 0, count: Int(CHORUS_FRAME_HEADER_BYTES))
        chorus_frame_encode(&h, &bytes)
        return bytes
    }

    /// A non-blocking socket whose connect to the target is under way (or done), or -1.
    private func connectWithoutWaiting(_ host: String, _ port: UInt16) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { return -1 }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        inet_pton(AF_INET, host, &address.sin_addr)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 || errno == EINPROGRESS else {
            close(fd)
            return -1
        }
        return fd
    }

    /// Whether a non-blocking connect succeeded (true), failed (false) or is still under way (nil).
    private func connectOutcome(_ fd: Int32) -> Bool? {
        var descriptor = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        guard poll(&descriptor, 1, 0) == 1 else { return nil }
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0 && error == 0
    }

    /// Sends the opening bytes of the attacker's kind on its newly connected socket.
    private func greet(_ attacker: Attacker) {
        switch attacker.kind {
        case .silent, .heartbeats: break
        case .dataHeader: send(attacker.fd, header(CHORUS_FRAME_DATA, length: 1 << 20))
        case .trickle: send(attacker.fd, header(CHORUS_FRAME_CONTROL, length: 1 << 20)) // never finished
        }
    }

    private func tick(_ attacker: Attacker) {
        switch attacker.kind {
        case .silent, .dataHeader: break
        case .heartbeats: send(attacker.fd, header(CHORUS_FRAME_HEARTBEAT, length: 0))
        case .trickle: send(attacker.fd, [0x55])
        }
    }

    private func send(_ fd: Int32, _ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// True when the target closed the connection (an orderly close or a reset), reading whatever it sent.
    private func closedByTarget(_ fd: Int32) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let got = recv(fd, &buffer, buffer.count, 0)
            if got > 0 { continue }
            if got == 0 { return true }
            return errno != EAGAIN && errno != EWOULDBLOCK
        }
    }
}

private func secondsSince(_ start: ContinuousClock.Instant) -> Double {
    let elapsed = ContinuousClock.now - start
    return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
}

private func endpoint(_ text: String) throws -> (String, UInt16) {
    let parts = text.split(separator: ":")
    guard parts.count == 2, let port = UInt16(parts[1]) else { throw ValidationError("expected HOST:PORT, got \(text)") }
    return (String(parts[0]), port)
}
