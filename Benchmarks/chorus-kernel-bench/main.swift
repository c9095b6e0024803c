// Shows that the reduction kernels are vectorized: each kernel against a scalar loop of the same
// semantics that the vectorizer is told to skip, on buffers that fit in L2 and on ones that do not.
// Run in release: swift run -c release chorus-kernel-bench
import ChorusAlgorithms
import KernelBaseline

typealias Baseline = (UnsafeMutableRawPointer, UnsafeRawPointer, UnsafeRawPointer, Int) -> Void

let cases: [(String, DataType, ReduceOp, Baseline)] = [
    ("f32 sum", .float32, .sum, { baseline_sum_f32($0.assumingMemoryBound(to: Float.self), $1.assumingMemoryBound(to: Float.self), $2.assumingMemoryBound(to: Float.self), $3) }),
    ("f32 max", .float32, .max, { baseline_max_f32($0.assumingMemoryBound(to: Float.self), $1.assumingMemoryBound(to: Float.self), $2.assumingMemoryBound(to: Float.self), $3) }),
    ("f64 sum", .float64, .sum, { baseline_sum_f64($0.assumingMemoryBound(to: Double.self), $1.assumingMemoryBound(to: Double.self), $2.assumingMemoryBound(to: Double.self), $3) }),
    ("bf16 sum", .bfloat16, .sum, { baseline_sum_bf16($0.assumingMemoryBound(to: UInt16.self), $1.assumingMemoryBound(to: UInt16.self), $2.assumingMemoryBound(to: UInt16.self), $3) }),
    ("f16 sum", .float16, .sum, { baseline_sum_f16($0.assumingMemoryBound(to: UInt16.self), $1.assumingMemoryBound(to: UInt16.self), $2.assumingMemoryBound(to: UInt16.self), $3) }),
    ("i32 sum", .int32, .sum, { baseline_sum_i32($0.assumingMemoryBound(to: Int32.self), $1.assumingMemoryBound(to: Int32.self), $2.assumingMemoryBound(to: Int32.self), $3) }),
    ("u8 sum", .uint8, .sum, { baseline_sum_u8($0.assumingMemoryBound(to: UInt8.self), $1.assumingMemoryBound(to: UInt8.self), $2.assumingMemoryBound(to: UInt8.self), $3) }),
]

func seconds(_ body: () -> Void) -> Double {
    let start = ContinuousClock.now
    body()
    let d = ContinuousClock.now - start
    return Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
}

func gbps(_ bytes: Int, _ time: Double) -> String {
    let value = Double(bytes) / time / 1e9
    return String(Int(value * 100) / 100) + "." + String(Int(value * 100) % 100 / 10) + String(Int(value * 100) % 10)
}

print("kernels dispatch to: \(Reduction.instructionSet)")
print("case        bytes/buffer   kernel GB/s   scalar GB/s   speed-up   (GB/s of output written, in place)")
for bytes in [256 << 10, 64 << 20] {
    for (name, dataType, op, baseline) in cases {
        let count = bytes / dataType.size
        let a = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        let b = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        defer { a.deallocate(); b.deallocate() }
        for i in 0 ..< bytes { a.storeBytes(of: UInt8(truncatingIfNeeded: i % 61 + 1), toByteOffset: i, as: UInt8.self)
                               b.storeBytes(of: UInt8(truncatingIfNeeded: i % 37 + 3), toByteOffset: i, as: UInt8.self) }
        let repeats = max(3, (256 << 20) / bytes)
        var best = Double.infinity, bestScalar = Double.infinity
        for _ in 0 ..< 3 {
            best = min(best, seconds { for _ in 0 ..< repeats { Reduction.combine(op, dataType, out: a, a, b, count: count) } })
            bestScalar = min(bestScalar, seconds { for _ in 0 ..< repeats { baseline(a, a, b, count) } })
        }
        let kernel = Double(bytes * repeats), speedup = bestScalar / best
        print(name.padding(12) + "\(bytes)".padding(15) + gbps(Int(kernel), best).padding(14) + gbps(Int(kernel), bestScalar).padding(14)
              + String(Int(speedup * 10) / 10) + "." + String(Int(speedup * 10) % 10) + "x")
    }
}

extension String {
    func padding(_ width: Int) -> String { self + String(repeating: " ", count: max(1, width - count)) }
}
