import Chorus

/// How far a quantized all-reduce's result is from the exact one on the bench's pattern: elements
/// outside the documented bound (each rank's half step for its block, plus f32 rounding), the largest
/// error, and the root-mean-square error relative to the exact result's.
struct QuantizationError: CustomStringConvertible {
    var outsideBound = 0
    var maxError = 0.0
    var rmsRelative = 0.0

    init() {}

    init(_ b: BenchBuffers, _ format: Quantization) {
        let count = b.outputCount, n = b.world
        var squaredError = 0.0, squaredExact = 0.0
        for start in stride(from: 0, to: count, by: format.blockSize) {
            let block = start ..< min(count, start + format.blockSize)
            var bound = 0.0
            for rank in 0 ..< n {
                let values = block.map { Float(b.pattern(rank: rank, index: $0)) }
                bound += Double(format.halfStep(magnitude: values.map(abs).max()!, range: values.max()! - values.min()!))
            }
            if b.op == .avg { bound /= Double(n) }
            for i in block {
                let exact = b.dataType.expected(index: i, worldSize: n, op: b.op)
                let error = abs(b.dataType.load(at: i, in: b.output) - exact)
                // f32 rounding of the sum, and one rounding of a 16-bit result.
                let slack = 1e-6 * Double(n) * (abs(exact) + 4) + (b.dataType == .f32 ? 0 : abs(exact) / 128)
                if !(error <= bound * 1.0001 + slack) { outsideBound += 1 }
                maxError = max(maxError, error)
                squaredError += error * error
                squaredExact += exact * exact
            }
        }
        rmsRelative = squaredExact > 0 ? (squaredError / squaredExact).squareRoot() : 0
    }

    var description: String {
        "max |error| \(maxError), rms error / rms of the exact result \(rmsRelative), \(outsideBound) outside the bound"
    }
}
