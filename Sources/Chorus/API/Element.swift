import ChorusAlgorithms

/// A Swift type whose arrays Chorus can reduce.
public protocol ChorusElement: Sendable {
    static var dataType: DataType { get }
}

extension Float: ChorusElement { public static var dataType: DataType { .float32 } }
extension Double: ChorusElement { public static var dataType: DataType { .float64 } }
extension Int32: ChorusElement { public static var dataType: DataType { .int32 } }
extension Int64: ChorusElement { public static var dataType: DataType { .int64 } }
extension UInt8: ChorusElement { public static var dataType: DataType { .uint8 } }
#if !((os(macOS) || targetEnvironment(macCatalyst)) && arch(x86_64))
extension Float16: ChorusElement { public static var dataType: DataType { .float16 } }
#endif

/// A bfloat16 value (the upper 16 bits of a Float), stored as its bit pattern.
public struct BFloat16: ChorusElement, Hashable, CustomStringConvertible {
    public static var dataType: DataType { .bfloat16 }

    public var bitPattern: UInt16

    public init(bitPattern: UInt16) { self.bitPattern = bitPattern }

    /// Rounds to nearest-even; NaN stays NaN (quiet).
    public init(_ value: Float) {
        let bits = value.bitPattern
        if bits & 0x7FFF_FFFF > 0x7F80_0000 {
            bitPattern = UInt16(truncatingIfNeeded: bits >> 16) | 0x40
        } else {
            bitPattern = UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
        }
    }

    public var floatValue: Float { Float(bitPattern: UInt32(bitPattern) << 16) }
    public var description: String { floatValue.description }
}
