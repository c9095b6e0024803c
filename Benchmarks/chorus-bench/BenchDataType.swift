import Chorus

/// The element types the bench sweeps, with exact test patterns: every input is a small integer, so
/// every partial result is exactly representable in every type and the expected output does not
/// depend on the order of reduction.
enum BenchDataType: String {
    case f32, f64, f16, bf16, i32, i64, u8

    var dataType: DataType {
        switch self {
        case .f32: .float32
        case .f64: .float64
        case .f16: .float16
        case .bf16: .bfloat16
        case .i32: .int32
        case .i64: .int64
        case .u8: .uint8
        }
    }

    var isFloat: Bool { [.f32, .f64, .f16, .bf16].contains(self) }

    /// The input of `rank` at element `index` for `op`.
    static func input(rank: Int, index: Int, op: ReduceOp) -> Int {
        switch op {
        case .prod: (rank + index) % 3 == 1 ? -1 : 1 // products stay ±1
        default: (rank * 7 + index) % 4
        }
    }

    /// The exact result at `index` over `worldSize` ranks, as the value to store.
    func expected(index: Int, worldSize: Int, op: ReduceOp) -> Double {
        let inputs = (0 ..< worldSize).map { Self.input(rank: $0, index: index, op: op) }
        switch op {
        case .sum: return Double(wrap(inputs.reduce(0, +)))
        case .prod: return Double(wrap(inputs.reduce(1, *)))
        case .min: return Double(wrap(inputs.min()!))
        case .max: return Double(wrap(inputs.max()!))
        case .avg:
            let sum = wrap(inputs.reduce(0, +))
            switch self {
            case .f64: return Double(sum) / Double(worldSize)
            case .f32, .f16, .bf16: return Double(Float(sum) / Float(worldSize))
            default: return Double(sum / worldSize)
            }
        }
    }

    /// Integer types wrap; u8 holds values mod 256 (the patterns keep negatives out of u8 sums).
    private func wrap(_ value: Int) -> Int { self == .u8 ? ((value % 256) + 256) % 256 : value }

    /// Stores `value` as element `index` of `buffer`.
    func store(_ value: Double, at index: Int, in buffer: UnsafeMutableRawPointer) {
        switch self {
        case .f32: buffer.storeBytes(of: Float(value), toByteOffset: index * 4, as: Float.self)
        case .f64: buffer.storeBytes(of: value, toByteOffset: index * 8, as: Double.self)
        case .f16: buffer.storeBytes(of: Float16(Float(value)).bitPattern, toByteOffset: index * 2, as: UInt16.self)
        case .bf16: buffer.storeBytes(of: BFloat16(Float(value)).bitPattern, toByteOffset: index * 2, as: UInt16.self)
        case .i32: buffer.storeBytes(of: Int32(value), toByteOffset: index * 4, as: Int32.self)
        case .i64: buffer.storeBytes(of: Int64(value), toByteOffset: index * 8, as: Int64.self)
        case .u8: buffer.storeBytes(of: UInt8(truncatingIfNeeded: Int(value)), toByteOffset: index, as: UInt8.self)
        }
    }

    /// Element `index` of `buffer` as a Double (float types; the quantized check reads results back).
    func load(at index: Int, in buffer: UnsafeRawPointer) -> Double {
        switch self {
        case .f32: Double(buffer.loadUnaligned(fromByteOffset: index * 4, as: Float.self))
        case .f16: Double(Float(Float16(bitPattern: buffer.loadUnaligned(fromByteOffset: index * 2, as: UInt16.self))))
        case .bf16: Double(BFloat16(bitPattern: buffer.loadUnaligned(fromByteOffset: index * 2, as: UInt16.self)).floatValue)
        default: Double(buffer.loadUnaligned(fromByteOffset: index * 8, as: Double.self))
        }
    }
}
