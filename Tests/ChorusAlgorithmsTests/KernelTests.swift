import ChorusAlgorithms
import ChorusTestSupport
import Testing

/// The C kernels against the Swift scalar reference, bitwise, for every dtype and op, including
/// NaN, ±0, ±inf and subnormals, vector tails (odd counts) and both in-place aliasings, with each
/// build of the kernels this CPU can run (AVX2+F16C and the x86-64 baseline) forced in turn.
/// Serialized: the tests switch the process-wide choice.
@Suite(.serialized) struct KernelTests {
    static let counts = [1, 2, 7, 8, 31, 33, 100, 257]

    @Test(arguments: DataType.allCases, ReduceOp.allCases)
    func matchesScalarReference(dataType: DataType, op: ReduceOp) {
        let chosen = Reduction.instructionSet
        defer { Reduction.selectInstructionSet(chosen) }
        for isa in Reduction.availableInstructionSets {
            #expect(Reduction.selectInstructionSet(isa) && Reduction.instructionSet == isa)
            Self.compareWithReference(dataType: dataType, op: op, isa: isa)
        }
    }

    static func compareWithReference(dataType: DataType, op: ReduceOp, isa: String) {
        for count in Self.counts {
            let a = TestInputs.make(rank: 0, count: count, dataType: dataType, op: op, specials: true)
            let b = TestInputs.make(rank: 3, count: count, dataType: dataType, op: op, specials: true)
            let size = dataType.size
            var expected: [UInt8] = []
            for i in 0 ..< count {
                expected += ReferenceReduction.combine(op, dataType, Array(a[i * size ..< (i + 1) * size]),
                                                       Array(b[i * size ..< (i + 1) * size]))
            }
            // Out of place.
            var out = [UInt8](repeating: 0xAB, count: a.count)
            out.withUnsafeMutableBytes { o in
                a.withUnsafeBytes { x in
                    b.withUnsafeBytes { y in
                        Reduction.combine(op, dataType, out: o.baseAddress!, x.baseAddress!, y.baseAddress!, count: count)
                    }
                }
            }
            #expect(out == expected, "\(isa): \(dataType) \(op) count \(count) out of place")
            // In place into a, then into b.
            var inA = a
            inA.withUnsafeMutableBytes { x in
                b.withUnsafeBytes { y in
                    Reduction.combine(op, dataType, out: x.baseAddress!, x.baseAddress!, y.baseAddress!, count: count)
                }
            }
            #expect(inA == expected, "\(isa): \(dataType) \(op) count \(count) in place (out == a)")
            var inB = b
            inB.withUnsafeMutableBytes { y in
                a.withUnsafeBytes { x in
                    Reduction.combine(op, dataType, out: y.baseAddress!, x.baseAddress!, y.baseAddress!, count: count)
                }
            }
            #expect(inB == expected, "\(isa): \(dataType) \(op) count \(count) in place (out == b)")
        }
    }

    @Test(arguments: DataType.allCases)
    func divideMatchesReference(dataType: DataType) {
        let count = 67
        let input = TestInputs.make(rank: 2, count: count, dataType: dataType, op: .avg, specials: true)
        for divisor in [1, 3, 8] {
            var buffer = input
            buffer.withUnsafeMutableBytes { Reduction.divide(dataType, $0.baseAddress!, count: count, by: divisor) }
            var expected: [UInt8] = []
            let size = dataType.size
            for i in 0 ..< count {
                expected += ReferenceReduction.divide(dataType, Array(input[i * size ..< (i + 1) * size]), by: divisor)
            }
            #expect(buffer == expected, "\(dataType) / \(divisor)")
        }
    }

    @Test func ieeeCornerCases() {
        func max32(_ x: Float, _ y: Float) -> Float {
            var out: Float = 0
            var a = x, b = y
            Reduction.combine(.max, .float32, out: &out, &a, &b, count: 1)
            return out
        }
        func min32(_ x: Float, _ y: Float) -> Float {
            var out: Float = 0
            var a = x, b = y
            Reduction.combine(.min, .float32, out: &out, &a, &b, count: 1)
            return out
        }
        #expect(max32(-0.0, 0.0).bitPattern == Float(0.0).bitPattern)
        #expect(max32(0.0, -0.0).bitPattern == Float(0.0).bitPattern)
        #expect(min32(-0.0, 0.0).bitPattern == Float(-0.0).bitPattern)
        #expect(max32(.nan, 1).isNaN && max32(1, .nan).isNaN && min32(.nan, -1).isNaN)
        var sub = Float.leastNonzeroMagnitude, two = Float(2), out = Float(0)
        Reduction.combine(.prod, .float32, out: &out, &sub, &two, count: 1)
        #expect(out == Float.leastNonzeroMagnitude * 2, "subnormals are not flushed to zero")
    }

    @Test func bothBuildsAreTestedWhereTheCPUCanRunBoth() {
        let available = Reduction.availableInstructionSets
        #expect(available.contains("baseline"), "the baseline build runs everywhere")
        #if arch(x86_64)
        // Every x86-64 machine this project runs on has AVX2; if it ever does not, say so loudly.
        #expect(available == ["avx2+f16c", "baseline"], "only \(available) can run here")
        #endif
        #expect(!Reduction.selectInstructionSet("sse9000"))
    }
}

@Suite struct PartitionTests {
    @Test func chunksCoverEveryElementOnce() {
        for count in [0, 1, 5, 8, 9, 1031] {
            for parts in 1 ... 9 {
                let p = Partition(count: count, parts: parts)
                var next = 0
                for c in 0 ..< parts {
                    #expect(p.start(of: c) == next)
                    next += p.length(of: c)
                    #expect(p.length(of: c) <= p.maxLength)
                }
                #expect(next == count)
            }
        }
    }
}
