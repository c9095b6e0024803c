/// Bounded little-endian encoding for control messages. Every read checks what remains before it
/// touches or allocates anything, so a hostile length cannot make us allocate.

/// A control payload that could not be decoded.
public struct DecodeError: Error, Equatable, Sendable, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { "malformed control message: \(reason)" }
}

struct ByteWriter {
    private(set) var bytes: [UInt8]

    /// Room for most messages at once: an array grown a few bytes at a time reallocates several times.
    init() {
        bytes = []
        bytes.reserveCapacity(64)
    }

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { integer(v) }
    mutating func u32(_ v: UInt32) { integer(v) }
    mutating func u64(_ v: UInt64) { integer(v) }
    /// Writes at most `ByteReader.maxStringBytes` of UTF-8, cut at a character boundary.
    mutating func string(_ s: String) {
        var utf8: [UInt8] = []
        for character in s {
            let encoded = Array(character.utf8)
            if utf8.count + encoded.count > Int(ByteReader.maxStringBytes) { break }
            utf8 += encoded
        }
        u16(UInt16(utf8.count))
        bytes.append(contentsOf: utf8)
    }
    /// Bytes of a length both sides know (nonces, proofs): no length prefix.
    mutating func raw(_ b: [UInt8]) { bytes.append(contentsOf: b) }
    private mutating func integer<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }
}

struct ByteReader {
    static let maxStringBytes: UInt16 = 1024
    private let bytes: [UInt8]
    private var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var remaining: Int { bytes.count - offset }

    mutating func u8() throws(DecodeError) -> UInt8 { try integer() }
    mutating func u16() throws(DecodeError) -> UInt16 { try integer() }
    mutating func u32() throws(DecodeError) -> UInt32 { try integer() }
    mutating func u64() throws(DecodeError) -> UInt64 { try integer() }

    /// A boolean byte: 0 or 1, anything else refused.
    mutating func flag(_ what: String) throws(DecodeError) -> Bool {
        let value = try u8()
        guard value <= 1 else { throw DecodeError("\(what) flag \(value) is not 0 or 1") }
        return value == 1
    }

    mutating func string() throws(DecodeError) -> String {
        let count = Int(try u16())
        guard count <= Int(Self.maxStringBytes) else { throw DecodeError("string longer than \(Self.maxStringBytes) bytes") }
        guard count <= remaining else { throw DecodeError("string runs past the end") }
        defer { offset += count }
        guard let text = String(validating: bytes[offset ..< offset + count], as: UTF8.self) else {
            throw DecodeError("string is not valid UTF-8")
        }
        return text
    }

    /// Reads a count of items that each take at least `minimumItemBytes`, refusing counts the
    /// remaining bytes cannot hold (before anything is reserved for them).
    mutating func count(minimumItemBytes: Int, limit: Int) throws(DecodeError) -> Int {
        let n = Int(try u32())
        guard n <= limit else { throw DecodeError("count \(n) over the limit \(limit)") }
        guard n * minimumItemBytes <= remaining else { throw DecodeError("count \(n) runs past the end") }
        return n
    }

    /// Exactly `count` bytes (a length both sides know).
    mutating func raw(_ count: Int) throws(DecodeError) -> [UInt8] {
        guard count <= remaining else { throw DecodeError("message truncated") }
        defer { offset += count }
        return Array(bytes[offset ..< offset + count])
    }

    func expectEnd() throws(DecodeError) {
        guard remaining == 0 else { throw DecodeError("\(remaining) trailing bytes") }
    }

    private mutating func integer<T: FixedWidthInteger>() throws(DecodeError) -> T {
        let size = MemoryLayout<T>.size
        guard size <= remaining else { throw DecodeError("message truncated") }
        var value: T = 0
        for i in 0 ..< size { value |= T(bytes[offset + i]) << (8 * i) }
        offset += size
        return value
    }
}
