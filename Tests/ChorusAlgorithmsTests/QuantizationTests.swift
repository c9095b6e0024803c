import ChorusAlgorithms
import Testing

/// The quantization kernels against a Swift reading of the documented format (chorus_kernels.h):
/// the bytes, the values read back, the error bound, the error feedback, and the edge blocks (all
/// zero, constant, non-finite, a short last block, odd blocks for int4), bitwise.
struct QuantizationTests {
    static let formats: [Quantization] = [
        Quantization(.int8), Quantization(.int4), Quantization(.int8, scaling: .minMax, blockSize: 32),
        Quantization(.int4, scaling: .minMax, blockSize: 7), Quantization(.int4, blockSize: 1), Quantization(.int8, blockSize: 1000),
    ]

    /// Distinct values in about [-3, 3] derived from the index, with a zero block, a constant block
    /// and (when asked) a NaN and an infinity.
    static func values(count: Int, specials: Bool) -> [Float] {
        (0 ..< count).map { i in
            if (64 ..< 128).contains(i) { return 0 }
            if (128 ..< 160).contains(i) { return 1.25 }
            if specials, i == 300 { return .nan }
            if specials, i == 401 { return -.infinity }
            return Float((i * 7919) % 6007) / 1000 - 3 + Float(i) * 1e-6
        }
    }

    /// What the format says the kernel writes, computed here from the description alone.
    static func referenceEncode(_ x: [Float], _ format: Quantization) -> [UInt8] {
        let minMax = format.scaling == .minMax
        let levels: Float = minMax ? (format.bits == .int8 ? 255 : 15) : (format.bits == .int8 ? 127 : 7)
        var out: [UInt8] = []
        for start in stride(from: 0, to: x.count, by: format.blockSize) {
            let block = Array(x[start ..< min(x.count, start + format.blockSize)])
            var base: Float = minMax ? block.min()! : 0
            var scale = minMax ? (block.max()! - block.min()!) / levels : block.map(abs).max()! / levels
            if block.contains(where: { !$0.isFinite }) { base = .nan; scale = .nan }
            if minMax { out += bytes(base) }
            out += bytes(scale)
            let q: [Int] = block.map { value in
                guard scale > 0 else { return 0 }
                let level = min(levels, max(minMax ? 0 : -levels, (value - base) * (1 / scale)))
                return Int(level.rounded(.toNearestOrEven))
            }
            if format.bits == .int8 {
                out += q.map { UInt8(truncatingIfNeeded: $0) }
            } else {
                let nibbles = q.map { UInt8(minMax ? $0 : $0 + 8) }
                for pair in stride(from: 0, to: nibbles.count, by: 2) {
                    out.append(nibbles[pair] | (pair + 1 < nibbles.count ? nibbles[pair + 1] << 4 : 0))
                }
            }
        }
        return out
    }

    static func bytes(_ value: Float) -> [UInt8] { withUnsafeBytes(of: value.bitPattern.littleEndian, Array.init) }

    static func encode(_ x: [Float], _ format: Quantization, feedback: inout [Float]?) -> [UInt8] {
        var encoded = [UInt8](repeating: 0xEE, count: format.encodedBytes(count: x.count))
        x.withUnsafeBytes { input in
            encoded.withUnsafeMutableBytes { output in
                if feedback == nil {
                    format.encode(input.baseAddress!, dataType: .float32, count: x.count, feedback: nil, into: output.baseAddress!)
                } else {
                    feedback!.withUnsafeMutableBufferPointer {
                        format.encode(input.baseAddress!, dataType: .float32, count: x.count, feedback: $0.baseAddress, into: output.baseAddress!)
                    }
                }
            }
        }
        return encoded
    }

    static func decode(_ encoded: [UInt8], count: Int, _ format: Quantization) -> [Float] {
        var out = [Float](repeating: -1, count: count)
        encoded.withUnsafeBytes { e in
            out.withUnsafeMutableBufferPointer { format.decode(e.baseAddress!, count: count, into: $0.baseAddress!, accumulating: false) }
        }
        return out
    }

    @Test(arguments: formats)
    func bytesAndValuesFollowTheDocumentedFormat(_ format: Quantization) {
        for count in [1, 2, 63, 64, 65, 500, 1001] {
            let x = Self.values(count: count, specials: count == 500)
            var none: [Float]? = nil
            let encoded = Self.encode(x, format, feedback: &none)
            #expect(encoded.count == format.encodedBytes(count: count))
            #expect(encoded == Self.referenceEncode(x, format), "\(format), \(count) elements")
            let read = Self.decode(encoded, count: count, format)
            for start in stride(from: 0, to: count, by: format.blockSize) {
                let block = start ..< min(count, start + format.blockSize)
                let finite = x[block].allSatisfy(\.isFinite)
                let magnitude = x[block].map(abs).max()!, range = x[block].max()! - x[block].min()!
                let bound = format.halfStep(magnitude: magnitude, range: range) * 1.0001 + magnitude * 1e-6
                for i in block {
                    if finite {
                        #expect(abs(read[i] - x[i]) <= bound, "\(format) element \(i): \(x[i]) read back as \(read[i])")
                    } else {
                        #expect(read[i].isNaN, "\(format) element \(i) of a block with a non-finite value: \(read[i])")
                    }
                }
            }
            // All-zero and constant blocks come back exactly (min-max blocks; absmax: the zero block).
            if count > 160, format.blockSize == 32 { #expect(read[128 ..< 160].allSatisfy { $0 == 1.25 }) }
            if count > 128, 64 % format.blockSize == 0 { #expect(read[64 ..< 128].allSatisfy { $0 == 0 }) }
        }
    }

    @Test(arguments: formats)
    func errorFeedbackCarriesWhatQuantizingLost(_ format: Quantization) {
        let count = 777
        let x = Self.values(count: count, specials: false)
        let old = (0 ..< count).map { Float($0 % 13) * 0.01 - 0.06 }
        var feedback: [Float]? = old
        let encoded = Self.encode(x, format, feedback: &feedback)
        let shifted = zip(x, old).map { $0 + $1 }
        var none: [Float]? = nil
        #expect(encoded == Self.encode(shifted, format, feedback: &none), "quantizes input + feedback")
        let read = Self.decode(encoded, count: count, format)
        #expect(feedback! == zip(shifted, read).map { $0 - $1 }, "feedback = what was quantized - what is read")
    }

    @Test func sixteenBitInputsQuantizeTheirF32Value() {
        let x = Self.values(count: 300, specials: false)
        let format = Quantization(.int8, blockSize: 16)
        var none: [Float]? = nil
        for dataType in [DataType.float16, .bfloat16] {
            let narrow: [UInt8] = x.flatMap { value -> [UInt8] in
                dataType == .float16 ? withUnsafeBytes(of: Float16(value), Array.init)
                                     : Self.bytes(value).suffix(2) // bf16: the upper half (truncated is fine here)
            }
            let widened: [Float] = stride(from: 0, to: narrow.count, by: 2).map { at in
                let bits = UInt16(narrow[at]) | UInt16(narrow[at + 1]) << 8
                return dataType == .float16 ? Float(Float16(bitPattern: bits)) : Float(bitPattern: UInt32(bits) << 16)
            }
            var encoded = [UInt8](repeating: 0, count: format.encodedBytes(count: x.count))
            narrow.withUnsafeBytes { input in
                encoded.withUnsafeMutableBytes {
                    format.encode(input.baseAddress!, dataType: dataType, count: x.count, feedback: nil, into: $0.baseAddress!)
                }
            }
            #expect(encoded == Self.encode(widened, format, feedback: &none), "\(dataType)")
        }
    }

    @Test func theDescriptorDetailNamesTheFormat() {
        for format in Self.formats {
            #expect(Quantization(quantizedDetail: format.quantizedDetail) == format)
        }
        #expect(Quantization(quantizedDetail: 1) == nil) // the ring
        #expect(Quantization(.int4, blockSize: 0).problem != nil && Quantization(.int8, blockSize: 65_537).problem != nil)
    }
}
