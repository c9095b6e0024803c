/// A small gated linear attention layer over plain arrays, the workload ZeCO's All-Scan exists for.
///
/// Per head h and token t: state S_t = g_t · S_{t-1} + k_tᵀ v_t (d_k × d_v), output o_t = q_t · S_t,
/// with a scalar gate g_t in (0, 1) per head. Sequence parallelism cuts the sequence into one shard
/// per rank; each shard runs from a zero state and needs exactly one tensor from outside, the state at
/// its start, which is the exclusive affine scan over the ranks' (decay product, final local state).
struct GatedLinearAttention {
    let heads: Int, keyDim: Int, valueDim: Int

    var stateCount: Int { heads * keyDim * valueDim }

    /// Token t's inputs, derived from (t, head, index) so every rank can make any token's.
    struct Token {
        var q: [Float], k: [Float], v: [Float] // heads x dim, row-major
        var gate: [Float]                      // heads
    }

    func token(_ t: Int) -> Token {
        func value(_ salt: Int, _ i: Int) -> Float {
            var x = UInt64(truncatingIfNeeded: t &* 1_000_003 &+ salt &* 7919 &+ i &* 104_729) &+ 0x9E37_79B9_7F4A_7C15
            x = (x ^ (x >> 30)) &* 0xBF58_476D_1CE4_E5B9
            x = (x ^ (x >> 27)) &* 0x94D0_49BB_1331_11EB
            return Float(x >> 40) / Float(1 << 24) - 0.5 // in [-0.5, 0.5)
        }
        return Token(q: (0 ..< heads * keyDim).map { value(1, $0) },
                     k: (0 ..< heads * keyDim).map { value(2, $0) },
                     v: (0 ..< heads * valueDim).map { value(3, $0) },
                     gate: (0 ..< heads).map { 0.9 + 0.09 * (value(4, $0) + 0.5) })
    }

    /// Runs tokens `range` from `initial` (heads x d_k x d_v). Returns the outputs (one heads x d_v
    /// row per token), the final state, and the product of the gates per head.
    func forward(_ range: Range<Int>, initial: [Float]) -> (outputs: [[Float]], state: [Float], decay: [Float]) {
        var state = initial
        var decay = [Float](repeating: 1, count: heads)
        var outputs: [[Float]] = []
        for t in range {
            let x = token(t)
            var o = [Float](repeating: 0, count: heads * valueDim)
            for h in 0 ..< heads {
                decay[h] *= x.gate[h]
                for i in 0 ..< keyDim {
                    for j in 0 ..< valueDim {
                        let s = h * keyDim * valueDim + i * valueDim + j
                        state[s] = x.gate[h] * state[s] + x.k[h * keyDim + i] * x.v[h * valueDim + j]
                        o[h * valueDim + j] += x.q[h * keyDim + i] * state[s]
                    }
                }
            }
            outputs.append(o)
        }
        return (outputs, state, decay)
    }
}
