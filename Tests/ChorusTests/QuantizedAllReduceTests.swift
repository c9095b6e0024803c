import Chorus
import ChorusTestSupport
import Testing

/// The quantized all-reduce over real sockets: every member's result equals, bit for bit, the
/// sequential reference (each rank's contribution quantized and read back, summed in rank order in
/// f32), so all members hold the same bits; the result stays within the documented bound of the exact
/// f32 sum; the error feedback is the reference's; and feeding the error back keeps a long run's
/// accumulated error at one step's size, where without it the error adds up.
@Suite(.serialized) struct QuantizedAllReduceTests {
    /// Distinct per rank and index, about [-2, 2].
    static func input(rank: Int, count: Int) -> [Float] {
        (0 ..< count).map { i in Float((rank * 7919 + i * 104_729) % 20_011) / 5000 - 2 + Float(rank) * 0.001 }
    }

    struct Reference {
        var sum: [Float]
        var feedback: [[Float]]
        /// Per element, the documented bound on |sum - exact|: each rank's half step, plus f32 rounding.
        var bound: [Float]
        var exact: [Float]
    }

    /// The sequential reference of `n` ranks, feedback (per rank) updated as the members update theirs.
    static func reference(_ inputs: [[Float]], _ format: Quantization, feedback: [[Float]]?) -> Reference {
        let count = inputs[0].count
        var sum = [Float](repeating: 0, count: count), exact = sum, bound = sum
        var newFeedback = feedback ?? []
        for (rank, x) in inputs.enumerated() {
            var encoded = [UInt8](repeating: 0, count: format.encodedBytes(count: count))
            var sent = x
            if let feedback { sent = zip(x, feedback[rank]).map { $0 + $1 } }
            x.withUnsafeBytes { input in
                encoded.withUnsafeMutableBytes { output in
                    if feedback != nil {
                        newFeedback[rank].withUnsafeMutableBufferPointer {
                            format.encode(input.baseAddress!, dataType: .float32, count: count, feedback: $0.baseAddress,
                                          into: output.baseAddress!)
                        }
                    } else {
                        format.encode(input.baseAddress!, dataType: .float32, count: count, feedback: nil, into: output.baseAddress!)
                    }
                }
            }
            encoded.withUnsafeBytes { e in
                sum.withUnsafeMutableBufferPointer { format.decode(e.baseAddress!, count: count, into: $0.baseAddress!, accumulating: rank > 0) }
            }
            for start in stride(from: 0, to: count, by: format.blockSize) {
                let block = start ..< min(count, start + format.blockSize)
                let magnitude = sent[block].map(abs).max()!, range = sent[block].max()! - sent[block].min()!
                for i in block { bound[i] += format.halfStep(magnitude: magnitude, range: range) * 1.0001 }
            }
            for i in 0 ..< count { exact[i] = rank == 0 ? sent[i] : exact[i] + sent[i] }
        }
        for i in 0 ..< count { bound[i] += Float(inputs.count) * 4 * Float.ulpOfOne * (abs(exact[i]) + 4 * Float(inputs.count)) }
        return Reference(sum: sum, feedback: newFeedback, bound: bound, exact: exact)
    }

    static func bf16(_ x: Float) -> UInt16 { BFloat16(x).bitPattern }

    @Test(arguments: [2, 3, 5, 8])
    func everyMemberHoldsTheSequentialReferenceBitForBit(worldSize n: Int) throws {
        try GroupHarness.run(worldSize: n) { c in
            let r = c.rank
            // f32 sum out of place, a count that is no multiple of the block.
            let int8 = Quantization(.int8)
            let inputs = (0 ..< n).map { Self.input(rank: $0, count: 1000) }
            let expected = Self.reference(inputs, int8, feedback: nil)
            var out = [Float](repeating: .nan, count: 1000)
            try inputs[r].withUnsafeBytes { send in
                try out.withUnsafeMutableBytes { receive in
                    try c.allReduce(send: send, receive: receive, count: 1000, dataType: .float32, quantization: int8)
                }
            }
            #expect(out.map(\.bitPattern) == expected.sum.map(\.bitPattern), "rank \(r): int8 sum differs from the reference")
            let worst = (0 ..< 1000).filter { abs(out[$0] - expected.exact[$0]) > expected.bound[$0] }
            #expect(worst.isEmpty, "rank \(r): outside the bound at \(worst.prefix(5))")

            // bf16 average in place, int4 min-max, odd blocks.
            let int4 = Quantization(.int4, scaling: .minMax, blockSize: 7)
            let small = (0 ..< n).map { Self.input(rank: $0, count: 333).map { Float(bitPattern: UInt32(Self.bf16($0)) << 16) } }
            let average = Self.reference(small, int4, feedback: nil).sum.map { Self.bf16($0 / Float(n)) }
            var values = small[r].map { Self.bf16($0) }
            try values.withUnsafeMutableBytes { buffer in
                try c.allReduce(send: UnsafeRawBufferPointer(buffer), receive: buffer, count: 333, dataType: .bfloat16,
                                op: .avg, quantization: int4)
            }
            #expect(values == average, "rank \(r): bf16 int4 average differs from the reference")

            // Two calls with error feedback: results and every member's feedback as the reference's.
            let format = Quantization(.int4, blockSize: 32)
            var feedback = [Float](repeating: 0, count: 500)
            var referenceFeedback = [[Float]](repeating: feedback, count: n)
            for step in 0 ..< 2 {
                let stepInputs = (0 ..< n).map { Self.input(rank: $0 + step, count: 500) }
                let expected = Self.reference(stepInputs, format, feedback: referenceFeedback)
                referenceFeedback = expected.feedback
                var values = stepInputs[r]
                try c.allReduce(&values, quantization: format, errorFeedback: &feedback)
                #expect(values.map(\.bitPattern) == expected.sum.map(\.bitPattern), "rank \(r) step \(step): sum")
                #expect(feedback.map(\.bitPattern) == expected.feedback[r].map(\.bitPattern), "rank \(r) step \(step): feedback")
            }

            // The async form, on the same inputs as the first call: the same bits.
            let asyncExpected = Self.reference(inputs, int8, feedback: [[Float]](repeating: [Float](repeating: 0, count: 1000), count: n))
            let (asyncValues, asyncFeedback) = try blockingAwait { () async throws -> ([Float], [Float]) in
                var values = inputs[r], feedback = [Float](repeating: 0, count: 1000)
                try await c.allReduce(&values, quantization: int8, errorFeedback: &feedback)
                return (values, feedback)
            }
            #expect(asyncValues.map(\.bitPattern) == asyncExpected.sum.map(\.bitPattern), "rank \(r): async sum")
            #expect(asyncFeedback.map(\.bitPattern) == asyncExpected.feedback[r].map(\.bitPattern), "rank \(r): async feedback")
        }
    }

    /// The same input summed 20 times: without feedback each step repeats the same rounding, so the
    /// total drifts by 20 steps' error; with it, what one step loses the next sends, and the total
    /// stays within about one step's error of the exact total.
    @Test func errorFeedbackKeepsTheAccumulatedErrorAtOneStep() throws {
        let count = 256, steps = 20
        try GroupHarness.run(worldSize: 2) { c in
            let format = Quantization(.int4, blockSize: 64)
            let inputs = (0 ..< 2).map { Self.input(rank: $0, count: count) }
            let oneStep = Self.reference(inputs, format, feedback: nil)
            var feedback = [Float](repeating: 0, count: count)
            var withFeedback = [Double](repeating: 0, count: count), without = withFeedback
            for _ in 0 ..< steps {
                var a = inputs[c.rank], b = inputs[c.rank]
                try c.allReduce(&a, quantization: format, errorFeedback: &feedback)
                try c.allReduce(&b, quantization: format)
                for i in 0 ..< count { withFeedback[i] += Double(a[i]); without[i] += Double(b[i]) }
            }
            let target = oneStep.exact.map { Double($0) * Double(steps) }
            let stepError = (0 ..< count).map { Double(abs(oneStep.sum[$0] - oneStep.exact[$0])) }.max()!
            let drift = (0 ..< count).map { abs(without[$0] - target[$0]) }.max()!
            let kept = (0 ..< count).map { abs(withFeedback[$0] - target[$0]) }.max()!
            #expect(drift > 5 * stepError, "without feedback the error adds up: \(drift) after \(steps) steps of \(stepError)")
            #expect(kept < 3 * stepError, "with feedback the total stays near: \(kept) against one step's \(stepError)")
        }
    }

    @Test func badArgumentsAreRefusedAndAMemberAloneGetsItsOwnContribution() throws {
        try GroupHarness.run(worldSize: 1) { c in
            var ints = [Int32](repeating: 1, count: 8)
            var floats = Self.input(rank: 0, count: 100)
            var shortFeedback = [Float](repeating: 0, count: 99)
            let cases: [(String, () throws -> Void)] = [
                ("i32", { try c.allReduce(&ints, quantization: Quantization(.int8)) }),
                ("cannot max", { try c.allReduce(&floats, op: .max, quantization: Quantization(.int8)) }),
                ("block of 0", { try c.allReduce(&floats, quantization: Quantization(.int8, blockSize: 0)) }),
                ("99 values for 100", { try c.allReduce(&floats, quantization: Quantization(.int8), errorFeedback: &shortFeedback) }),
            ]
            for (what, call) in cases {
                do {
                    try call()
                    Issue.record("accepted: \(what)")
                } catch ChorusError.invalidArgument(let message) {
                    #expect(message.contains(what), "\(message)")
                }
            }
            #expect(floats == Self.input(rank: 0, count: 100), "a refused call left its input alone")
            let alone = Self.reference([floats], Quantization(.int8), feedback: nil).sum
            try c.allReduce(&floats, quantization: Quantization(.int8))
            #expect(floats.map(\.bitPattern) == alone.map(\.bitPattern))
        }
    }
}
