/// The operator of an All-Scan. `affine` reads each element as `h -> g*h + s` with a per-rank decay g
/// broadcast over the state (see `ChainScan`); the others are element-wise and commutative.
public enum ScanOperator: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case sum, prod, max, min, affine

    /// The reduction kernel op for the element-wise operators.
    var reduceOp: ReduceOp? {
        switch self {
        case .sum: .sum
        case .prod: .prod
        case .max: .max
        case .min: .min
        case .affine: nil
        }
    }

    public var description: String {
        switch self {
        case .sum: "sum"
        case .prod: "prod"
        case .max: "max"
        case .min: "min"
        case .affine: "affine"
        }
    }

    /// Writes the operator's identity (rank 0's exclusive result) into `count` elements:
    /// 0 for sum and affine, 1 for prod, the lowest value (-inf) for max, the highest (+inf) for min.
    public func fillIdentity(_ buffer: UnsafeMutableRawPointer, count: Int, dataType: DataType) {
        func fill<T>(_ value: T) {
            let typed = buffer.bindMemory(to: T.self, capacity: count)
            for i in 0 ..< count { typed[i] = value }
        }
        switch (self, dataType) {
        case (.sum, _), (.affine, _): buffer.initializeMemory(as: UInt8.self, repeating: 0, count: count * dataType.size)
        case (.prod, .float32): fill(Float(1))
        case (.prod, .float64): fill(Double(1))
        case (.prod, .float16), (.prod, .bfloat16): fill(dataType == .float16 ? UInt16(0x3C00) : UInt16(0x3F80))
        case (.prod, .int32): fill(Int32(1))
        case (.prod, .int64): fill(Int64(1))
        case (.prod, .uint8): fill(UInt8(1))
        case (.max, .float32): fill(-Float.infinity)
        case (.max, .float64): fill(-Double.infinity)
        case (.max, .float16), (.max, .bfloat16): fill(dataType == .float16 ? UInt16(0xFC00) : UInt16(0xFF80))
        case (.max, .int32): fill(Int32.min)
        case (.max, .int64): fill(Int64.min)
        case (.max, .uint8): fill(UInt8.min)
        case (.min, .float32): fill(Float.infinity)
        case (.min, .float64): fill(Double.infinity)
        case (.min, .float16), (.min, .bfloat16): fill(dataType == .float16 ? UInt16(0x7C00) : UInt16(0x7F80))
        case (.min, .int32): fill(Int32.max)
        case (.min, .int64): fill(Int64.max)
        case (.min, .uint8): fill(UInt8.max)
        }
    }
}
