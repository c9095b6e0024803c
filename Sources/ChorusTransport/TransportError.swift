import CChorusTransport
#if canImport(Glibc)
import Glibc
#endif

/// Why a transport call or a connection failed. The one error type of the transport layer.
public struct TransportError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What went wrong, mirroring the C layer's status codes.
    public enum Code: Int32, Sendable {
        case badMagic = -100, badVersion = -101, badType = -102, badFlags = -103
        case controlTooLarge = -104, badLength = -105, outOfSequence = -106, badCredit = -107
        case staleEpoch = -110, epochMismatch = -111, opMismatch = -112, tagMismatch = -113
        case lengthMismatch = -114, unexpectedControl = -115, tooManyQueued = -116, unexpectedData = -117
        case peerClosed = -120, idleTimeout = -121, cancelled = -122, connectFailed = -123, system = -124
        case handshakeTimeout = -125, controlBudget = -126, handshakeFlood = -127
        case timedOut = -130, interrupted = -131, invalidArgument = -132, noSuchConnection = -133
        case address = -134, shutdown = -135, fenced = -136, outOfTouch = -137
        case noRDMA = -140
    }

    public let code: Code
    /// The errno of the system call behind the failure (`.system`, or `.peerClosed` from a reset), 0 otherwise.
    public let systemErrno: Int32
    /// The name of that system call ("recv", "sendmsg", "ibv_post_send"); empty otherwise.
    public let systemCall: String
    /// For a failed listen or connect: the system call, the address and the errno text
    /// ("bind 127.0.0.1:28148: Address already in use"); empty otherwise.
    public let detail: String

    public init(code: Code, systemErrno: Int32 = 0, systemCall: String = "", detail: String = "") {
        self.code = code
        self.systemErrno = systemErrno
        self.systemCall = systemCall
        self.detail = detail
    }

    init(status: Int32, systemErrno: Int32 = 0, systemCall: String = "", detail: String = "") {
        self.init(code: Code(rawValue: status) ?? .system, systemErrno: systemErrno, systemCall: systemCall, detail: detail)
    }

    /// True when the remote side sent something that violates the wire protocol.
    public var isProtocolViolation: Bool {
        (-117 ... -100).contains(code.rawValue)
    }

    public var description: String {
        let text = String(cString: chorus_status_string(code.rawValue))
        if !detail.isEmpty { return "\(text): \(detail)" }
        guard systemErrno != 0 else { return text }
        let call = systemCall.isEmpty ? "" : "\(systemCall): "
        return "\(text) (\(call)\(String(cString: strerror(systemErrno))), errno \(systemErrno))"
    }
}

@inline(__always)
func check(_ status: Int32) throws(TransportError) {
    if status != 0 { throw TransportError(status: status) }
}

/// `check` for listen and connect, whose failures the C layer explains in `chorus_last_failure`.
@inline(__always)
func checkSetUp(_ status: Int32) throws(TransportError) {
    if status != 0 { throw TransportError(status: status, detail: String(cString: chorus_last_failure())) }
}
