import ChorusAlgorithms
import Dispatch

/// An all-reduce started with `Communicator.startAllReduce`: its data has moved, and `wait()`
/// returns its verdict. Waiting is optional for the order of operations (a later blocking call, an
/// `updateTopology()` or a deeper start takes the verdicts still owed), but it is how the outcome
/// is learned; the buffers stay lent until `wait()` returns.
public final class PendingCollective: @unchecked Sendable {
    private let communicator: Communicator
    private let operation: InFlightOperation

    init(_ communicator: Communicator, _ operation: InFlightOperation) {
        self.communicator = communicator
        self.operation = operation
    }

    /// Waits for the verdict. Throws as the blocking all-reduce does: `aborted` (retryable; the
    /// input restored, also when in place) for this operation and every later one of the epoch.
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

/// Collectives in flight together (DESIGN.md, "Operations in flight"). Every member must start
/// the same operations in the same order, as with blocking calls: from several threads, the
/// program orders the starts itself. A mismatch is the usual `argumentMismatch`, the same at
/// every member.
extension Communicator {
    /// Starts an all-reduce and returns once its data has moved, before its verdict: the master's
    /// round trip overlaps the data of the operations started after it. Up to
    /// `Configuration.operationsInFlight` wait for verdicts at once (one more first takes the
    /// oldest verdict). The buffers must stay valid until `wait()` returns.
    /// - Throws: `invalidArgument` at once; errors of a lost master. An abort is `wait()`'s, also
    ///   when an earlier operation of the epoch aborted before this one started (a start in a
    ///   broken epoch moves nothing and has that verdict, as it does at the members that start it
    ///   before they learn of the abort).
    public func startAllReduce(send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer,
                               count: Int, dataType: DataType, op: ReduceOp = .sum,
                               algorithm: AllReduceAlgorithm = .auto) throws -> PendingCollective {
        let bytes = try checkedBytes(count, dataType, send.count, receive.count, "send", "receive")
        try checkNoPartialOverlap(send, bytes, receive, bytes)
        let operation = try withCore { core throws in
            try core.startAllReduce(input: send.baseAddress ?? UnsafeRawPointer(placeholder), output: receive.baseAddress ?? placeholder,
                                    count: count, dataType: dataType, op: op, algorithm: algorithm)
        }
        return PendingCollective(self, operation)
    }

    /// Starts an all-reduce in place (see `startAllReduce(send:receive:count:dataType:op:algorithm:)`).
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

    /// All-reduces every buffer in place, keeping them in flight together, and retries the ones
    /// that aborted after re-forming the group without admitting anyone (PCCL's
    /// `all_reduce_multiple_with_retry`). Every member passes the same buffers' sizes in the same
    /// order.
    /// - Throws: a non-retryable error at once (after the verdicts in flight are taken); the last
    ///   retryable one after `policy.maxAttempts` attempts, with the buffers that failed restored.
    public func allReduceMultiple(inPlace buffers: [UnsafeMutableRawBufferPointer], dataType: DataType,
                                  op: ReduceOp = .sum, policy: RetryPolicy = RetryPolicy()) throws {
        var remaining = Array(buffers.indices)
        for attempt in 1 ... policy.maxAttempts {
            if attempt > 1 { try updateTopology(minimumWorldSize: policy.minimumWorldSize, admitting: false) }
            var started: [(index: Int, pending: PendingCollective)] = []
            var failed: [Int] = []
            var lastError: ChorusError?
            for (position, index) in remaining.enumerated() {
                do {
                    let buffer = buffers[index]
                    started.append((index, try startAllReduce(inPlace: buffer, count: buffer.count / dataType.size,
                                                              dataType: dataType, op: op)))
                } catch let error as ChorusError where error.isRetryable {
                    failed += remaining[position...]
                    lastError = error
                    break
                }
            }
            for (index, pending) in started {
                do {
                    try pending.wait()
                } catch let error as ChorusError where error.isRetryable {
                    failed.append(index)
                    lastError = error
                }
            }
            guard let lastError else { return }
            if attempt == policy.maxAttempts { throw lastError }
            remaining = failed.sorted()
        }
    }
}
