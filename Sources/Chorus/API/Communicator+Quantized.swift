import ChorusAlgorithms

/// The quantized all-reduce: data sent as 8- or 4-bit integers with a scale per block, summed in f32,
/// the same bits at every member (`QuantizedAllReduce` says how and what it costs).
extension Communicator {
    /// Sums (or averages) `count` elements of `send` (f32, f16 or bf16) into `receive` at every member,
    /// sending them quantized as `quantization` says. Every member must pass the same format.
    ///
    /// `errorFeedback`, when given, holds `count` f32 values the caller keeps between calls (zero at
    /// first): what quantizing lost last time is added before quantizing, and this call's loss is
    /// left in it. An aborted call puts it back as it was, with an in-place buffer, so a retry
    /// starts over.
    public func allReduce(send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, count: Int,
                          dataType: DataType, op: ReduceOp = .sum, quantization: Quantization,
                          errorFeedback: UnsafeMutableBufferPointer<Float>? = nil) throws {
        try run(quantizedAllReducePlan(send: send, receive: receive, count: count, dataType: dataType, op: op,
                                       quantization: quantization, errorFeedback: errorFeedback))
    }

    func quantizedAllReducePlan(send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, count: Int,
                                dataType: DataType, op: ReduceOp, quantization: Quantization,
                                errorFeedback: UnsafeMutableBufferPointer<Float>?) throws -> CollectivePlan {
        let bytes = try checkedBytes(count, dataType, send.count, receive.count, "send", "receive")
        try checkNoPartialOverlap(send, bytes, receive, bytes)
        if let problem = QuantizedAllReduce.problem(dataType: dataType, op: op) ?? quantization.problem {
            throw ChorusError.invalidArgument(problem)
        }
        if let errorFeedback {
            guard errorFeedback.count == count else {
                throw ChorusError.invalidArgument("the error-feedback buffer holds \(errorFeedback.count) values for \(count) elements")
            }
            let feedback = UnsafeRawBufferPointer(errorFeedback)
            for (name, other) in [("send", UnsafeRawBufferPointer(send)), ("receive", UnsafeRawBufferPointer(receive))]
            where Self.overlap(feedback, other, bytes: bytes) {
                throw ChorusError.invalidArgument("the error-feedback buffer overlaps the \(name) buffer")
            }
        }
        return { core, session in
            core.quantizedAllReducePlan(session: session, input: send.baseAddress ?? UnsafeRawPointer(placeholder),
                                        output: receive.baseAddress ?? placeholder, count: count, dataType: dataType, op: op,
                                        format: quantization, feedback: errorFeedback?.baseAddress)
        }
    }

    /// Quantized all-reduce of an array in place.
    public func allReduce<Element: ChorusElement>(_ values: inout [Element], op: ReduceOp = .sum,
                                                  quantization: Quantization) throws {
        let count = values.count
        try values.withUnsafeMutableBytes { buffer in
            try allReduce(send: UnsafeRawBufferPointer(buffer), receive: buffer, count: count, dataType: Element.dataType,
                          op: op, quantization: quantization)
        }
    }

    /// Quantized all-reduce of an array in place, with the caller's error feedback (one `Float` per
    /// element, zeros before the first call).
    public func allReduce<Element: ChorusElement>(_ values: inout [Element], op: ReduceOp = .sum,
                                                  quantization: Quantization, errorFeedback: inout [Float]) throws {
        let count = values.count
        try values.withUnsafeMutableBytes { buffer in
            try errorFeedback.withUnsafeMutableBufferPointer { feedback in
                try allReduce(send: UnsafeRawBufferPointer(buffer), receive: buffer, count: count, dataType: Element.dataType,
                              op: op, quantization: quantization, errorFeedback: feedback)
            }
        }
    }

    /// Async, in place on an array (moved to the communicator's queue and back, not copied).
    public func allReduce<Element: ChorusElement>(_ values: inout [Element], op: ReduceOp = .sum,
                                                  quantization: Quantization) async throws {
        let box = ArrayBox(values)
        values = []
        defer { values = box.values }
        try await offload(queue) { () throws in try self.allReduce(&box.values, op: op, quantization: quantization) }
    }

    /// Async, in place on an array, with the caller's error feedback (both moved, not copied).
    public func allReduce<Element: ChorusElement>(_ values: inout [Element], op: ReduceOp = .sum,
                                                  quantization: Quantization, errorFeedback: inout [Float]) async throws {
        let box = ArrayBox(values), feedback = ArrayBox(errorFeedback)
        values = []
        errorFeedback = []
        defer {
            values = box.values
            errorFeedback = feedback.values
        }
        try await offload(queue) { () throws in
            try self.allReduce(&box.values, op: op, quantization: quantization, errorFeedback: &feedback.values)
        }
    }

    private static func overlap(_ feedback: UnsafeRawBufferPointer, _ other: UnsafeRawBufferPointer, bytes: Int) -> Bool {
        guard let f = feedback.baseAddress, let o = other.baseAddress, feedback.count > 0, bytes > 0 else { return false }
        return f < o + bytes && o < f + feedback.count
    }
}
