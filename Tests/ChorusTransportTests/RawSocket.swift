import Glibc

/// A plain blocking TCP client, to put arbitrary bytes on the wire.
final class RawSocket {
    private(set) var fd: Int32

    init(port: UInt16) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else { throw RawSocketError() }
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Aborts the connection: a close with a zero linger time sends a reset instead of a FIN.
    func reset() {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        close(fd)
        fd = -1
    }

    func send(_ bytes: [UInt8]) { _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }

    /// True when the other side closed the connection within the timeout (what it sends meanwhile,
    /// heartbeats say, is read and dropped; the timeout bounds the whole wait).
    func closedByPeer(timeoutMilliseconds: Int32) -> Bool {
        var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        var buffer = [UInt8](repeating: 0, count: 4096)
        let deadline = ContinuousClock.now + .milliseconds(timeoutMilliseconds)
        while true {
            let left = deadline - ContinuousClock.now
            guard left > .zero else { return false }
            guard poll(&descriptor, 1, Int32(left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000) + 1) > 0
            else { return false }
            if recv(fd, &buffer, buffer.count, 0) <= 0 { return true }
        }
    }
}

struct RawSocketError: Error {}

/// A frame header as it goes on the wire (little-endian).
func header(magic: UInt32 = 0x5352_4843, version: UInt8 = 1, type: UInt8, flags: UInt16 = 0, tag: UInt32 = 0,
            length: UInt32, epoch: UInt64 = 0, opID: UInt64 = 0) -> [UInt8] {
    var bytes: [UInt8] = []
    func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    put(magic); put(version); put(type); put(flags); put(tag); put(length); put(epoch); put(opID)
    return bytes
}
