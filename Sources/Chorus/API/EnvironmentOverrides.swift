import Logging
#if canImport(Glibc)
import Glibc
#endif

extension Configuration {
    /// The defaults with `CHORUS_*` environment overrides applied:
    /// `CHORUS_BIND`, `CHORUS_ADVERTISE`, `CHORUS_PEER_PORTS` ("40000-40099" or one port), `CHORUS_HEARTBEAT_MS`, `CHORUS_PEER_TIMEOUT_MS`,
    /// `CHORUS_CONNECT_TIMEOUT_MS`, `CHORUS_HANDSHAKE_TIMEOUT_MS`, `CHORUS_OP_TIMEOUT_MS`, `CHORUS_ADMISSION_TIMEOUT_MS`,
    /// `CHORUS_SEGMENT_BYTES`, `CHORUS_SOCKET_BUFFER_BYTES`, `CHORUS_SPIN_US`, `CHORUS_CONNECTIONS`, `CHORUS_PEER_GROUP`, `CHORUS_RD_MAX_BYTES`, `CHORUS_SCAN_RD_MAX_BYTES`,
    /// `CHORUS_SYNC_CHUNK_BYTES`, `CHORUS_SYNC_CHUNKS_IN_FLIGHT`, `CHORUS_TRANSPORT` (tcp, rdma, auto), `CHORUS_LOG_LEVEL` (trace, debug, info, notice,
    /// warning, error, critical), `CHORUS_SECRET_FILE` (a file holding the shared secret) or `CHORUS_SECRET` (the secret itself).
    /// - Throws: `ChorusError.invalidArgument` naming a variable whose value is not a number.
    public static func fromEnvironment(_ environment: [String: String] = currentEnvironment()) throws -> Configuration {
        var c = Configuration()
        func number(_ key: String) throws -> Int? {
            guard let text = environment[key] else { return nil }
            guard let value = Int(text), value >= 0 else {
                throw ChorusError.invalidArgument("\(key)=\(text) is not a non-negative integer")
            }
            return value
        }
        if let v = environment["CHORUS_BIND"] { c.bindHost = v }
        if let v = environment["CHORUS_ADVERTISE"] { c.advertisedHost = v }
        if let v = environment["CHORUS_PEER_PORTS"] {
            let bounds = v.split(separator: "-", omittingEmptySubsequences: false).map { UInt16($0) }
            guard (1 ... 2).contains(bounds.count), let first = bounds.first!, let last = bounds.last!, first > 0, first <= last else {
                throw ChorusError.invalidArgument("CHORUS_PEER_PORTS=\(v) is not a port or a range like 40000-40099")
            }
            c.peerPorts = first ... last
        }
        if let v = environment["CHORUS_LOG_LEVEL"] {
            guard let level = Logger.Level(rawValue: v.lowercased()) else {
                let names = Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")
                throw ChorusError.invalidArgument("CHORUS_LOG_LEVEL=\(v) is not one of \(names)")
            }
            c.logger.logLevel = level
        }
        if let v = environment["CHORUS_TRANSPORT"] {
            guard let kind = TransportKind(rawValue: v) else {
                throw ChorusError.invalidArgument("CHORUS_TRANSPORT=\(v) is not one of \(TransportKind.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            c.transport = kind
        }
        switch (environment["CHORUS_SECRET_FILE"], environment["CHORUS_SECRET"]) {
        case (let path?, nil): c.secret = try readSecretFile(path)
        case (nil, let text?): c.secret = Array(text.utf8)
        case (_?, _?): throw ChorusError.invalidArgument("both CHORUS_SECRET_FILE and CHORUS_SECRET are set; set one")
        case (nil, nil): break
        }
        if let v = try number("CHORUS_HEARTBEAT_MS") { c.heartbeatInterval = .milliseconds(v) }
        if let v = try number("CHORUS_PEER_TIMEOUT_MS") { c.peerTimeout = .milliseconds(v) }
        if let v = try number("CHORUS_SUSPICION_MULTIPLE") { c.suspicionMultiple = v }
        if let v = try number("CHORUS_SUSPICION_MIN_MS") { c.suspicionMinimum = .milliseconds(v) }
        if let v = try number("CHORUS_PROBE_TIMEOUT_MS") { c.probeTimeout = .milliseconds(v) }
        if let v = try number("CHORUS_MASTER_WINDOW_MS") { c.masterWindow = .milliseconds(v) }
        if let v = try number("CHORUS_CONNECT_TIMEOUT_MS") { c.connectTimeout = .milliseconds(v) }
        if let v = try number("CHORUS_HANDSHAKE_TIMEOUT_MS") { c.handshakeTimeout = .milliseconds(v) }
        if let v = try number("CHORUS_OP_TIMEOUT_MS") { c.operationTimeout = .milliseconds(v) }
        if let v = try number("CHORUS_ADMISSION_TIMEOUT_MS") { c.admissionTimeout = .milliseconds(v) }
        if let v = try number("CHORUS_LINK_FAILURE_GRACE_MS") { c.linkFailureGrace = .milliseconds(v) }
        if let v = try number("CHORUS_SEGMENT_BYTES") { c.segmentBytes = v }
        if let v = try number("CHORUS_SOCKET_BUFFER_BYTES") { c.socketBufferBytes = v }
        if let v = try number("CHORUS_SPIN_US") { c.spinWait = .microseconds(v) }
        if let v = try number("CHORUS_RD_MAX_BYTES") { c.recursiveDoublingMaxBytes = v }
        if let v = try number("CHORUS_SCAN_RD_MAX_BYTES") { c.scanRecursiveDoublingMaxBytes = v }
        if let v = try number("CHORUS_SYNC_CHUNK_BYTES") { c.syncChunkBytes = v }
        if let v = try number("CHORUS_SYNC_CHUNKS_IN_FLIGHT") { c.syncChunksInFlight = v }
        if let v = try number("CHORUS_CONNECTIONS") { c.connectionsPerPeer = v }
        if let v = try number("CHORUS_OPERATIONS_IN_FLIGHT") { c.operationsInFlight = v }
        if let v = try number("CHORUS_PEER_GROUP") {
            guard let group = UInt32(exactly: v) else { throw ChorusError.invalidArgument("CHORUS_PEER_GROUP=\(v) is above \(UInt32.max)") }
            c.peerGroup = group
        }
        // Ranges and relations (a heartbeat shorter than the peer timeout, ...) are checked by
        // validate(), for these values and for ones a program sets directly alike.
        try c.validate()
        return c
    }

    /// The secret held in the file at `path`: its bytes, without trailing newlines or spaces.
    /// - Throws: `invalidArgument` naming the file and why it cannot be read.
    public static func readSecretFile(_ path: String) throws(ChorusError) -> [UInt8] {
        guard let file = fopen(path, "rb") else {
            throw .invalidArgument("the secret file \(path) cannot be read: \(String(cString: strerror(errno)))")
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while bytes.count <= 1 << 16 {
            let got = fread(&chunk, 1, chunk.count, file)
            if got == 0 { break }
            bytes += chunk[..<got]
        }
        guard bytes.count <= 1 << 16 else { throw .invalidArgument("the secret file \(path) is over 64 KiB; is it the right file?") }
        while let last = bytes.last, [0x0A, 0x0D, 0x20, 0x09].contains(last) { bytes.removeLast() }
        return bytes
    }

    /// The process environment.
    public static func currentEnvironment() -> [String: String] {
        var result: [String: String] = [:]
        var entry = environ
        while let pointer = entry.pointee {
            let pair = String(cString: pointer)
            if let eq = pair.firstIndex(of: "=") {
                result[String(pair[..<eq])] = String(pair[pair.index(after: eq)...])
            }
            entry += 1
        }
        return result
    }
}

/// Parses "host:port", "[v6]:port" or a bare host (which gets `defaultPort`).
func parseEndpoint(_ text: String, defaultPort: UInt16) throws(ChorusError) -> (host: String, port: UInt16) {
    if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
        let host = String(text[text.index(after: text.startIndex) ..< close])
        let rest = text[text.index(after: close)...]
        if rest.isEmpty { return (host, defaultPort) }
        guard rest.hasPrefix(":"), let port = UInt16(rest.dropFirst()) else {
            throw ChorusError.invalidArgument("bad endpoint '\(text)'")
        }
        return (host, port)
    }
    let parts = text.split(separator: ":", omittingEmptySubsequences: false)
    switch parts.count {
    case 1 where !text.isEmpty: return (text, defaultPort)
    case 2 where !parts[0].isEmpty:
        guard let port = UInt16(parts[1]) else { throw ChorusError.invalidArgument("bad port in '\(text)'") }
        return (String(parts[0]), port)
    default: throw ChorusError.invalidArgument("bad endpoint '\(text)' (expected host:port)")
    }
}
