import CChorusKernels

/// The C reduction kernels over raw memory (see chorus_kernels.h for the exact semantics).
public enum Reduction {
    /// `out[i] = a[i] op b[i]` for `count` elements; `out` may be `a` or `b`, but not overlap partially.
    @inline(__always)
    public static func combine(_ op: ReduceOp, _ dataType: DataType, out: UnsafeMutableRawPointer,
                               _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, count: Int) {
        guard count > 0 else { return }
        let status = chorus_reduce(dataType.kernelValue, op.kernelValue, out, a, b, count)
        precondition(status == 0, "reduction kernel rejected \(dataType)/\(op)")
    }

    /// Finishes an average: `buffer[i] /= divisor`.
    public static func divide(_ dataType: DataType, _ buffer: UnsafeMutableRawPointer, count: Int, by divisor: Int) {
        guard count > 0 else { return }
        let status = chorus_divide(dataType.kernelValue, buffer, count, UInt32(divisor))
        precondition(status == 0, "divide kernel rejected \(dataType) / \(divisor)")
    }

    /// The instruction set the kernels use on this machine.
    public static var instructionSet: String { String(cString: chorus_kernels_isa()) }

    /// The instruction sets the kernels can run here ("avx2+f16c" where the CPU has it, "baseline").
    public static var availableInstructionSets: [String] {
        ["avx2+f16c", "baseline"].filter { chorus_kernels_supports($0) != 0 }
    }

    /// Switches the kernels to `name` (see `availableInstructionSets`); false when this CPU cannot.
    @discardableResult
    public static func selectInstructionSet(_ name: String) -> Bool { chorus_kernels_select(name) == 0 }
}
