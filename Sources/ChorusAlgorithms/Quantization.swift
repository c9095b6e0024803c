import CChorusKernels

/// How a quantized all-reduce sends its data: integers of `bits` bits with one scale per block of
/// `blockSize` elements (DiLoCo-style compressed outer gradients). Every member must pass the same.
public struct Quantization: Sendable, Hashable, CustomStringConvertible {
    public enum Bits: Int, Sendable, CaseIterable {
        case int8 = 8
        case int4 = 4
    }

    public enum Scaling: Int, Sendable, CaseIterable {
        /// One scale per block, the block's largest magnitude over 127 (int4: 7); signed integers.
        case absmax = 0
        /// The block's minimum and (max - min) / 255 (int4: 15); unsigned integers, so every level
        /// covers the block's actual range (better for data that is not centred on zero).
        case minMax = 1
    }

    public let bits: Bits
    public let scaling: Scaling
    /// Elements per scale: smaller blocks follow the data more closely and cost more headers
    /// (4 bytes per block, 8 for min-max). 1 ... 65,536.
    public let blockSize: Int

    public static let largestBlock = Int(CHORUS_QUANT_MAX_BLOCK)

    public init(_ bits: Bits, scaling: Scaling = .absmax, blockSize: Int = 64) {
        self.bits = bits
        self.scaling = scaling
        self.blockSize = blockSize
    }

    /// Why this format cannot be used, or nil.
    public var problem: String? {
        (1 ... Self.largestBlock).contains(blockSize)
            ? nil : "a quantization block of \(blockSize) elements is outside 1...\(Self.largestBlock)"
    }

    /// Bytes `count` elements take on the wire.
    public func encodedBytes(count: Int) -> Int {
        chorus_quantized_size(count, Int32(bits.rawValue), Int32(scaling.rawValue), blockSize)
    }

    /// Quantizes `count` elements of `input` (f32, f16 or bf16) into `output` (`encodedBytes(count:)`),
    /// with the error feedback `feedback` (count f32) when given: see `chorus_quantize`.
    public func encode(_ input: UnsafeRawPointer, dataType: DataType, count: Int, feedback: UnsafeMutablePointer<Float>?,
                       into output: UnsafeMutableRawPointer) {
        let status = chorus_quantize(dataType.kernelValue, input, feedback, count, Int32(bits.rawValue),
                                     Int32(scaling.rawValue), blockSize, output.assumingMemoryBound(to: UInt8.self))
        precondition(status == 0, "quantize kernel rejected \(dataType) \(self)")
    }

    /// Reads `count` quantized elements back into f32, added to `output` when `accumulating` (in f32,
    /// no fused multiply-add: the same bits on every machine).
    public func decode(_ encoded: UnsafeRawPointer, count: Int, into output: UnsafeMutablePointer<Float>, accumulating: Bool) {
        let status = chorus_dequantize_accumulate(encoded.assumingMemoryBound(to: UInt8.self), count, Int32(bits.rawValue),
                                                  Int32(scaling.rawValue), blockSize, output, accumulating ? 1 : 0)
        precondition(status == 0, "dequantize kernel rejected \(self)")
    }

    /// The largest difference between a value and what its block sends for it, for a block whose
    /// largest magnitude is `magnitude` (absmax) or whose range is `range` (min-max): half a step,
    /// plus float rounding.
    public func halfStep(magnitude: Float, range: Float) -> Float {
        switch scaling {
        case .absmax: magnitude / Float(bits == .int8 ? 127 : 7) / 2
        case .minMax: range / Float(bits == .int8 ? 255 : 15) / 2
        }
    }

    /// "int8 absmax, blocks of 64".
    public var description: String {
        "int\(bits.rawValue) \(scaling == .absmax ? "absmax" : "min-max"), blocks of \(blockSize)"
    }

    /// An all-reduce descriptor's detail for this format: the algorithm byte says "quantized" (the
    /// other algorithms are 0-2) and the bytes above it the format, so the master tells members that
    /// quantize differently apart.
    public var quantizedDetail: UInt64 {
        Self.algorithmByte | UInt64(bits.rawValue) << 8 | UInt64(scaling.rawValue) << 16 | UInt64(blockSize) << 32
    }

    private static let algorithmByte: UInt64 = 3

    /// The format an all-reduce descriptor's detail names, or nil when it is not quantized.
    public init?(quantizedDetail detail: UInt64) {
        guard detail & 0xFF == Self.algorithmByte, let bits = Bits(rawValue: Int(detail >> 8 & 0xFF)),
              let scaling = Scaling(rawValue: Int(detail >> 16 & 0xFF)) else { return nil }
        self.init(bits, scaling: scaling, blockSize: Int(detail >> 32))
    }
}
