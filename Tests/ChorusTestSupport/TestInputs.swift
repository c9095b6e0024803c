import ChorusAlgorithms

/// Inputs derived from rank and index, so every element of every rank differs and an element that
/// went to the wrong place shows. `specials` salts in NaN, ±0, ±inf and subnormals for float types,
/// at most one NaN per index across ranks for sum, prod and avg (which NaN an addition returns is the
/// hardware's and the compiler's business). For min and max every rank puts a NaN carrying its own
/// payload at some indices: IEEE 754-2019 returns the first operand's, so the result shows the order
/// in which the ranks were folded, and a rank that folds in another order is caught.
public enum TestInputs {
    public static func make(rank: Int, count: Int, dataType: DataType, op: ReduceOp, specials: Bool = false) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count * dataType.size)
        for i in 0 ..< count {
            out += element(rank: rank, index: i, dataType: dataType, op: op, specials: specials)
        }
        return out
    }

    static func element(rank: Int, index i: Int, dataType: DataType, op: ReduceOp, specials: Bool) -> [UInt8] {
        let r = ReferenceReduction.self
        // Products of many values overflow fast; keep factors near 1 so results stay finite and distinct.
        let value: Double = op == .prod ? 1 + Double((rank * 31 + i * 7) % 17) / 64 * (i % 2 == 0 ? 1 : -1)
                                        : Double(rank * 1000 + i) * 0.37 - 50
        if specials, dataType != .int32, dataType != .int64, dataType != .uint8 {
            if op == .max || op == .min, i % 13 == 7 { return nanWithPayload(rank + 1, dataType) }
            let special: Double? = switch (i + rank) % 11 {
            case 0 where rank == i % 5: .nan
            case 1: -0.0
            case 2: 0.0
            case 3: rank % 2 == 0 ? .infinity : -.infinity
            case 4: dataType == .float64 ? 4.9e-324 * Double(rank + 1) : 1.0e-40 * Double(rank + 1) // subnormal
            case 5: dataType == .float16 ? 6.0e-8 * Double(rank + 1) : -1.0e-45 * Double(rank + 2)
            default: nil
            }
            if let special { return encode(special, dataType) }
        }
        switch dataType {
        case .int32: return r.bytes(Int32(truncatingIfNeeded: rank * 100_003 + i * 7 - 5000))
        case .int64: return r.bytes(Int64(rank) << 33 &+ Int64(i) &* 977 &- 12345)
        case .uint8: return r.bytes(UInt8(truncatingIfNeeded: rank * 13 + i * 3 + 1))
        default: return encode(value, dataType)
        }
    }

    /// A quiet NaN whose payload is `payload`.
    static func nanWithPayload(_ payload: Int, _ dataType: DataType) -> [UInt8] {
        let r = ReferenceReduction.self
        switch dataType {
        case .float32: return r.bytes(UInt32(0x7FC0_0000) | UInt32(payload))
        case .float64: return r.bytes(UInt64(0x7FF8_0000_0000_0000) | UInt64(payload))
        case .float16: return r.bytes(UInt16(0x7E00) | UInt16(payload))
        case .bfloat16: return r.bytes(UInt16(0x7FC0) | UInt16(payload))
        default: fatalError("not a float type")
        }
    }

    static func encode(_ value: Double, _ dataType: DataType) -> [UInt8] {
        let r = ReferenceReduction.self
        switch dataType {
        case .float32: return r.bytes(Float(value))
        case .float64: return r.bytes(value)
        case .float16: return r.bytes(Float16(Float(value)).bitPattern)
        case .bfloat16: return r.bytes(r.floatToBF16(Float(value)))
        default: fatalError("not a float type")
        }
    }
}
