import CChorusKernels

/// Element types Chorus reduces.
public enum DataType: UInt8, CaseIterable, Sendable, CustomStringConvertible {
    case float32, float64, float16, bfloat16, int32, int64, uint8

    /// Bytes per element.
    public var size: Int { chorus_dtype_size(Int32(kernelValue)) }

    var kernelValue: Int32 {
        switch self {
        case .float32: Int32(CHORUS_DTYPE_F32.rawValue)
        case .float64: Int32(CHORUS_DTYPE_F64.rawValue)
        case .float16: Int32(CHORUS_DTYPE_F16.rawValue)
        case .bfloat16: Int32(CHORUS_DTYPE_BF16.rawValue)
        case .int32: Int32(CHORUS_DTYPE_I32.rawValue)
        case .int64: Int32(CHORUS_DTYPE_I64.rawValue)
        case .uint8: Int32(CHORUS_DTYPE_U8.rawValue)
        }
    }

    public var description: String {
        switch self {
        case .float32: "f32"
        case .float64: "f64"
        case .float16: "f16"
        case .bfloat16: "bf16"
        case .int32: "i32"
        case .int64: "i64"
        case .uint8: "u8"
        }
    }
}

/// Reduction operators. `avg` is a sum divided by the world size once, at the chunk's owner.
public enum ReduceOp: UInt8, CaseIterable, Sendable, CustomStringConvertible {
    case sum, prod, min, max, avg

    var kernelValue: Int32 {
        switch self {
        case .sum: Int32(CHORUS_REDOP_SUM.rawValue)
        case .prod: Int32(CHORUS_REDOP_PROD.rawValue)
        case .min: Int32(CHORUS_REDOP_MIN.rawValue)
        case .max: Int32(CHORUS_REDOP_MAX.rawValue)
        case .avg: Int32(CHORUS_REDOP_AVG.rawValue)
        }
    }

    public var description: String {
        switch self {
        case .sum: "sum"
        case .prod: "prod"
        case .min: "min"
        case .max: "max"
        case .avg: "avg"
        }
    }
}
