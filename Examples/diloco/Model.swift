// A two-layer MLP (tanh hidden layer, sigmoid output, binary cross-entropy) on generated data, in
// plain Swift: small enough for CPUs, deterministic, so every peer computes the same update bitwise.
import ChorusLauncher

struct Batch {
    var inputs: [Float] // rows of `Model.inputs`
    var labels: [Float] // 0 or 1
    var count: Int { labels.count }

    /// A batch drawn from the teacher rule: the label says whether a fixed nonlinear function of the
    /// input is positive (with 5% of labels flipped, so the loss cannot reach zero).
    static func generate(count: Int, seed: UInt64) -> Batch {
        var rng = SplitMix64(seed: seed)
        var inputs: [Float] = [], labels: [Float] = []
        for _ in 0 ..< count {
            let x = (0 ..< Model.inputs).map { _ in rng.symmetric() }
            var score = x[0] * x[1] * 2 - x[2] + 0.5
            for j in 3 ..< Model.inputs { score += x[j] * (j % 2 == 0 ? 0.3 : -0.2) }
            let flip = rng.next() % 20 == 0
            inputs += x
            labels.append((score > 0) != flip ? 1 : 0)
        }
        return Batch(inputs: inputs, labels: labels)
    }
}

/// Parameters live in one flat array: W1 (hidden x inputs), b1 (hidden), w2 (hidden), b2.
enum Model {
    static let inputs = 16, hidden = 32
    static let parameterCount = hidden * inputs + hidden + hidden + 1

    static func initialParameters(seed: UInt64) -> [Float] {
        var rng = SplitMix64(seed: seed)
        return (0 ..< parameterCount).map { _ in rng.symmetric() * 0.3 }
    }

    /// Mean binary cross-entropy over the batch, and (when asked) its gradient.
    static func loss(_ p: [Float], _ batch: Batch, gradient: inout [Float]?) -> Float {
        let w2 = hidden * inputs + hidden, b2 = w2 + hidden
        var total: Float = 0
        var h = [Float](repeating: 0, count: hidden)
        if gradient != nil { gradient = [Float](repeating: 0, count: parameterCount) }
        for n in 0 ..< batch.count {
            let x = batch.inputs[n * inputs ..< (n + 1) * inputs]
            var z = p[b2]
            for k in 0 ..< hidden {
                var a = p[hidden * inputs + k]
                for (j, xj) in x.enumerated() { a += p[k * inputs + j] * xj }
                h[k] = tanhf(a)
                z += p[w2 + k] * h[k]
            }
            let y = batch.labels[n], prediction = 1 / (1 + expf(-z))
            total -= y * logf(max(prediction, 1e-7)) + (1 - y) * logf(max(1 - prediction, 1e-7))
            guard gradient != nil else { continue }
            let dz = (prediction - y) / Float(batch.count)
            gradient![b2] += dz
            for k in 0 ..< hidden {
                gradient![w2 + k] += dz * h[k]
                let da = dz * p[w2 + k] * (1 - h[k] * h[k])
                gradient![hidden * inputs + k] += da
                for (j, xj) in x.enumerated() { gradient![k * inputs + j] += da * xj }
            }
        }
        return total / Float(batch.count)
    }
}

#if canImport(Glibc)
import Glibc
#endif
