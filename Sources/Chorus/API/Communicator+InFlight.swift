import ChorusAlgorithms
import Dispatch

/// A collective started with one of `Communicator`'s `start...` forms (`startAllReduce`, ...): its
/// data has moved, and `wait()` returns its verdict. Waiting is optional for the order of
/// operations (a later blocking call, an `updateTopology()` or a deeper start takes the verdicts
/// still owed), but it is how the outcome is learned; the buffers stay lent until `wait()` returns.
public final class PendingCollective: @unchecked Sendable {
    private let communicator: Communicator
    private let operation: InFlightOperation

    init(_ communicator: Communicator, _ operation: InFlightOperation) {
        self.communicator = communicator
        self.operation = operation
    }

    /// Waits for the verdict. Throws as the blocking form does: `aborted` (retryable; the input
    /// restored, also when in place) for this operation and every later one of the epoch.
    public func wait() throws {
        try communicator.withCore { core throws in
            core.settle(through: operation)
            try operation.result!.get()
        }
    }

    /// Whether the verdict has come, without waiting: reads what the master has sent if no other
    /// call holds the communicator. True when it succeeded; throws as `wait()` when it aborted;
    /// false while it is pending.
    public func test() throws -> Bool {
        let settled = try communicator.withCoreIfAvailable { core throws in
            core.settleArrivedVerdicts()
            return operation.result
        }
        guard let result = settled ?? nil else { return false }
        try result.get()
        return true
    }

    /// Async form of `wait()`: the wait runs on a dispatch thread, never on Swift's cooperative pool.
    public func wait() async throws {
        try await offload(DispatchQueue.global()) { () throws in try self.wait() }
    }
}

/// Collectives in flight together (DESIGN.md, "Operations in flight"). Each `start...` form moves
/// its collective's data and returns before the verdict: the master's round trip of one overlaps
/// the data of the ones started after it. Up to `Configuration.operationsInFlight` wait for their
/// verdicts at once (one more start first takes the oldest verdict); a blocking call, a safe point
/// or a leave takes every verdict still owed first. The buffers stay lent until `wait()` returns.
/// Every member must start the same collectives in the same order, as with blocking calls: from
/// several threads, the program orders the starts itself. A different call is the usual
/// `argumentMismatch`, the same at every member.
///
/// Each form throws what its blocking form throws for invalid arguments, and the errors of a lost
/// master; an abort is `wait()`'s, also when an earlier operation of the epoch aborted before this
/// one started (a start in a broken epoch moves nothing and has that verdict, as it does at the
/// members that start it before they learn of the abort).
extension Communicator {
    /// Starts `allReduce(send:receive:count:dataType:op:algorithm:)`.
    public func startAllReduce(send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer,
                               count: Int, dataType: DataType, op: ReduceOp = .sum,
                               algorithm: AllReduceAlgorithm = .auto) throws -> PendingCollective {
        try start(allReducePlan(send: send, receive: receive, count: count, dataType: dataType, op: op, algorithm: algorithm))
    }

    /// Starts an all-reduce in place.
    public func startAllReduce(inPlace buffer: UnsafeMutableRawBufferPointer, count: Int, dataType: DataType,
                               op: ReduceOp = .sum, algorithm: AllReduceAlgorithm = .auto) throws -> PendingCollective {
        try startAllReduce(send: UnsafeRawBufferPointer(buffer), receive: buffer, count: count, dataType: dataType,
                           op: op, algorithm: algorithm)
    }

    /// Async form: the start runs on this communicator's queue, so async tasks that start in a
    /// fixed order keep that order.
    public func startAllReduce(inPlace buffer: UnsafeMutableRawBufferPointer, count: Int, dataType: DataType,
                               op: ReduceOp = .sum, algorithm: AllReduceAlgorithm = .auto) async throws -> PendingCollective {
        nonisolated(unsafe) let buffer = buffer
        return try await offload(queue) { () throws in
            try self.startAllReduce(inPlace: buffer, count: count, dataType: dataType, op: op, algorithm: algorithm)
        }
    }

    /// Starts the quantized `allReduce(send:receive:count:dataType:op:quantization:errorFeedback:)`;
    /// the feedback buffer is lent until `wait()` returns too.
    public func startAllReduce(send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer, count: Int,
                               dataType: DataType, op: ReduceOp = .sum, quantization: Quantization,
                               errorFeedback: UnsafeMutableBufferPointer<Float>? = nil) throws -> PendingCollective {
        try start(quantizedAllReducePlan(send: send, receive: receive, count: count, dataType: dataType, op: op,
                                         quantization: quantization, errorFeedback: errorFeedback))
    }

    /// Starts `reduceScatter(send:receive:count:dataType:op:)`.
    public func startReduceScatter(send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer,
                                   count: Int, dataType: DataType, op: ReduceOp = .sum) throws -> PendingCollective {
        try start(reduceScatterPlan(send: send, receive: receive, count: count, dataType: dataType, op: op))
    }

    /// Starts `allGather(send:receive:count:dataType:)`.
    public func startAllGather(send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer,
                               count: Int, dataType: DataType) throws -> PendingCollective {
        try start(allGatherPlan(send: send, receive: receive, count: count, dataType: dataType))
    }

    /// Starts `broadcast(_:root:)`.
    public func startBroadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws -> PendingCollective {
        try start(broadcastPlan(buffer, root: root))
    }

    /// Starts `allScan(state:count:dataType:op:decay:decayCount:exclusive:inclusive:reverse:blocks:algorithm:)`.
    public func startAllScan(state: UnsafeRawBufferPointer, count: Int, dataType: DataType, op: ScanOperator = .sum,
                             decay: UnsafeRawBufferPointer? = nil, decayCount: Int = 1,
                             exclusive: UnsafeMutableRawBufferPointer?, inclusive: UnsafeMutableRawBufferPointer?,
                             reverse: Bool = false, blocks: Int? = nil, algorithm: ScanAlgorithm = .auto) throws -> PendingCollective {
        try start(allScanPlan(state: state, count: count, dataType: dataType, op: op, decay: decay, decayCount: decayCount,
                              exclusive: exclusive, inclusive: inclusive, reverse: reverse, blocks: blocks, algorithm: algorithm))
    }

    /// Starts `barrier()`: its verdict comes once every member has started it.
    public func startBarrier() throws -> PendingCollective {
        try start { core, session in core.barrierPlan(session: session) }
    }

    private func start(_ plan: CollectivePlan) throws -> PendingCollective {
        PendingCollective(self, try withCore { core throws in try core.start { session throws(ChorusError) in try plan(core, session) } })
    }

    /// All-reduces every buffer in place, keeping them in flight together, and retries the ones
    /// that aborted after re-forming the group without admitting anyone (PCCL's
    /// `all_reduce_multiple_with_retry`). Every member passes the same buffers' sizes in the same
    /// order. Every operation started has its verdict before this returns or throws, so no buffer
    /// is written afterwards.
    /// - Throws: `invalidArgument` for a buffer that is not whole elements; a non-retryable error
    ///   once the operations started are settled; the last retryable one after
    ///   `policy.maxAttempts` attempts, with the buffers that failed restored.
    public func allReduceMultiple(inPlace buffers: [UnsafeMutableRawBufferPointer], dataType: DataType,
                                  op: ReduceOp = .sum, policy: RetryPolicy = RetryPolicy()) throws {
        if let odd = buffers.firstIndex(where: { $0.count % dataType.size != 0 }) {
            throw ChorusError.invalidArgument("buffer \(odd) holds \(buffers[odd].count) bytes, not whole \(dataType) elements")
        }
        var remaining = Array(buffers.indices)
        for attempt in 1 ... policy.maxAttempts {
            if attempt > 1 { try updateTopology(minimumWorldSize: policy.minimumWorldSize, admitting: false) }
            var started: [(index: Int, pending: PendingCollective)] = []
            var failed: [Int] = []
            var lastError: (any Error)?
            for (position, index) in remaining.enumerated() {
                do {
                    let buffer = buffers[index]
                    started.append((index, try startAllReduce(inPlace: buffer, count: buffer.count / dataType.size,
                                                              dataType: dataType, op: op)))
                } catch {
                    failed += remaining[position...]
                    lastError = error
                    break
                }
            }
            for (index, pending) in started {
                do {
                    try pending.wait()
                } catch {
                    failed.append(index)
                    if (lastError as? ChorusError)?.isRetryable != false { lastError = error } // keep a fatal one
                }
            }
            guard let lastError else { return }
            guard (lastError as? ChorusError)?.isRetryable == true, attempt < policy.maxAttempts else { throw lastError }
            remaining = failed.sorted()
        }
    }
}
