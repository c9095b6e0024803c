import CChorus
import Chorus

/// A collective checked and bound to its arguments, ready to run on the communicator's queue: to
/// its verdict (`inFlight` false; returns nil), or started in flight (`Communicator`'s start forms).
typealias BoundCollective = @Sendable (_ communicator: Communicator, _ inFlight: Bool) throws -> PendingCollective?

/// Runs a collective now: on the communicator's queue, after every call made before it.
private func blocking(_ comm: OpaquePointer?, _ error: UnsafeMutablePointer<chorus_error>?,
                      _ bind: () throws -> BoundCollective) -> chorus_status {
    guarded(error) {
        let handle = try object(comm, "comm", as: CommHandle.self)
        let collective = try bind()
        _ = try handle.inOrder { try collective(handle.communicator, false) }
    }
}

/// Starts a collective in flight on the communicator's queue, behind every call made before it:
/// the queue moves on once its data has moved, and `request` completes with its verdict.
private func queued(_ comm: OpaquePointer?, _ request: UnsafeMutablePointer<OpaquePointer?>?,
                    _ error: UnsafeMutablePointer<chorus_error>?, _ bind: () throws -> BoundCollective) -> chorus_status {
    guarded(error) {
        let handle = try object(comm, "comm", as: CommHandle.self)
        guard let request else { throw ArgumentError("request is NULL") }
        let collective = try bind()
        let pending = RequestHandle()
        request.pointee = retained(pending)
        handle.enqueue {
            do {
                pending.started(try collective(handle.communicator, true)!)
            } catch {
                pending.finish(error)
            }
        }
    }
}

/// The caller's buffers, crossing to the queue as raw pointers: they are lent until the call (or its
/// request) ends. Their lengths are taken when the collective runs, since some depend on the world size.
private struct Lent: @unchecked Sendable {
    let send: UnsafeRawPointer?
    let receive: UnsafeMutableRawPointer?

    func sendBytes(_ elements: Int, _ type: DataType) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: send, count: elements * type.size)
    }
    func receiveBytes(_ elements: Int, _ type: DataType) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: receive, count: elements * type.size)
    }
}

private func allReduce(_ send: UnsafeRawPointer?, _ receive: UnsafeMutableRawPointer?, _ count: Int, _ type: chorus_type,
                       _ op: chorus_reduce_op) throws -> BoundCollective {
    let dataType = try dataType(type), op = try reduceOp(op)
    _ = try (bytes(send, count, dataType, "send"), mutableBytes(receive, count, dataType, "receive"))
    let lent = Lent(send: send, receive: receive)
    return { c, inFlight in
        let (send, receive) = (lent.sendBytes(count, dataType), lent.receiveBytes(count, dataType))
        if inFlight { return try c.startAllReduce(send: send, receive: receive, count: count, dataType: dataType, op: op) }
        try c.allReduce(send: send, receive: receive, count: count, dataType: dataType, op: op)
        return nil
    }
}

private func quantizedAllReduce(_ send: UnsafeRawPointer?, _ receive: UnsafeMutableRawPointer?, _ count: Int,
                                _ type: chorus_type, _ op: chorus_reduce_op, _ bits: Int32, _ scaling: Int32, _ block: Int,
                                _ feedback: UnsafeMutablePointer<Float>?) throws -> BoundCollective {
    let dataType = try dataType(type), op = try reduceOp(op)
    _ = try (bytes(send, count, dataType, "send"), mutableBytes(receive, count, dataType, "receive"))
    guard let bits = Quantization.Bits(rawValue: Int(bits)) else { throw ArgumentError("bits must be 8 or 4, not \(bits)") }
    guard let scaling = Quantization.Scaling(rawValue: Int(scaling)) else {
        throw ArgumentError("scaling must be 0 (absmax) or 1 (min-max), not \(scaling)")
    }
    struct Feedback: @unchecked Sendable { let buffer: UnsafeMutableBufferPointer<Float>? }
    let lent = Lent(send: send, receive: receive), format = Quantization(bits, scaling: scaling, blockSize: block)
    let kept = Feedback(buffer: feedback.map { UnsafeMutableBufferPointer(start: $0, count: count) })
    return { c, inFlight in
        let (send, receive) = (lent.sendBytes(count, dataType), lent.receiveBytes(count, dataType))
        if inFlight {
            return try c.startAllReduce(send: send, receive: receive, count: count, dataType: dataType, op: op,
                                        quantization: format, errorFeedback: kept.buffer)
        }
        try c.allReduce(send: send, receive: receive, count: count, dataType: dataType, op: op, quantization: format,
                        errorFeedback: kept.buffer)
        return nil
    }
}

private func reduceScatter(_ send: UnsafeRawPointer?, _ receive: UnsafeMutableRawPointer?, _ count: Int, _ type: chorus_type,
                           _ op: chorus_reduce_op) throws -> BoundCollective {
    let dataType = try dataType(type), op = try reduceOp(op)
    _ = try (bytes(send, count, dataType, "send"), mutableBytes(receive, count, dataType, "receive"))
    let lent = Lent(send: send, receive: receive)
    return { c, inFlight in
        let (send, receive) = (lent.sendBytes(count * c.worldSize, dataType), lent.receiveBytes(count, dataType))
        if inFlight { return try c.startReduceScatter(send: send, receive: receive, count: count, dataType: dataType, op: op) }
        try c.reduceScatter(send: send, receive: receive, count: count, dataType: dataType, op: op)
        return nil
    }
}

private func allGather(_ send: UnsafeRawPointer?, _ receive: UnsafeMutableRawPointer?, _ count: Int,
                       _ type: chorus_type) throws -> BoundCollective {
    let dataType = try dataType(type)
    _ = try (bytes(send, count, dataType, "send"), mutableBytes(receive, count, dataType, "receive"))
    let lent = Lent(send: send, receive: receive)
    return { c, inFlight in
        let (send, receive) = (lent.sendBytes(count, dataType), lent.receiveBytes(count * c.worldSize, dataType))
        if inFlight { return try c.startAllGather(send: send, receive: receive, count: count, dataType: dataType) }
        try c.allGather(send: send, receive: receive, count: count, dataType: dataType)
        return nil
    }
}

private func broadcast(_ buffer: UnsafeMutableRawPointer?, _ count: Int, _ type: chorus_type, _ root: Int32) throws -> BoundCollective {
    let dataType = try dataType(type)
    _ = try mutableBytes(buffer, count, dataType, "buffer")
    let lent = Lent(send: nil, receive: buffer)
    return { c, inFlight in
        if inFlight { return try c.startBroadcast(lent.receiveBytes(count, dataType), root: Int(root)) }
        try c.broadcast(lent.receiveBytes(count, dataType), root: Int(root))
        return nil
    }
}

private func barrier() -> BoundCollective {
    { c, inFlight in
        if inFlight { return try c.startBarrier() }
        try c.barrier()
        return nil
    }
}

private func allScan(_ state: UnsafeRawPointer?, _ exclusive: UnsafeMutableRawPointer?, _ inclusive: UnsafeMutableRawPointer?,
                     _ count: Int, _ type: chorus_type, _ op: chorus_scan_op, _ decay: UnsafeRawPointer?, _ decayCount: Int,
                     _ reverse: Int32) throws -> BoundCollective {
    let dataType = try dataType(type)
    guard let value = UInt8(exactly: op.rawValue), let scanOp = ScanOperator(rawValue: value) else {
        throw ArgumentError("unknown chorus_scan_op \(op.rawValue)")
    }
    struct Scan: @unchecked Sendable {
        let state: UnsafeRawBufferPointer, decay: UnsafeRawBufferPointer?
        let exclusive: UnsafeMutableRawBufferPointer?, inclusive: UnsafeMutableRawBufferPointer?
    }
    let lent = Scan(state: try bytes(state, count, dataType, "state"),
                    decay: scanOp == .affine ? try bytes(decay, decayCount, dataType, "decay") : nil,
                    exclusive: try exclusive.map { try mutableBytes($0, count, dataType, "exclusive") },
                    inclusive: try inclusive.map { try mutableBytes($0, count, dataType, "inclusive") })
    let decays = scanOp == .affine ? decayCount : 1
    return { c, inFlight in
        if inFlight {
            return try c.startAllScan(state: lent.state, count: count, dataType: dataType, op: scanOp, decay: lent.decay,
                                      decayCount: decays, exclusive: lent.exclusive, inclusive: lent.inclusive, reverse: reverse != 0)
        }
        try c.allScan(state: lent.state, count: count, dataType: dataType, op: scanOp, decay: lent.decay,
                      decayCount: decays, exclusive: lent.exclusive, inclusive: lent.inclusive, reverse: reverse != 0)
        return nil
    }
}

// MARK: - Blocking

@_cdecl("chorus_all_reduce")
public func chorus_all_reduce(_ comm: OpaquePointer?, _ send: UnsafeRawPointer?, _ receive: UnsafeMutableRawPointer?, _ count: Int,
                              _ type: chorus_type, _ op: chorus_reduce_op, _ error: UnsafeMutablePointer<chorus_error>?) -> chorus_status {
    blocking(comm, error) { try allReduce(send, receive, count, type, op) }
}

@_cdecl("chorus_all_reduce_quantized")
public func chorus_all_reduce_quantized(_ comm: OpaquePointer?, _ send: UnsafeRawPointer?, _ receive: UnsafeMutableRawPointer?,
                                        _ count: Int, _ type: chorus_type, _ op: chorus_reduce_op, _ bits: Int32, _ scaling: Int32,
                                        _ block: Int, _ feedback: UnsafeMutablePointer<Float>?,
                                        _ error: UnsafeMutablePointer<chorus_error>?) -> chorus_status {
    blocking(comm, error) { try quantizedAllReduce(send, receive, count, type, op, bits, scaling, block, feedback) }
}

@_cdecl("chorus_reduce_scatter")
public func chorus_reduce_scatter(_ comm: OpaquePointer?, _ send: UnsafeRawPointer?, _ receive: UnsafeMutableRawPointer?, _ count: Int,
                                  _ type: chorus_type, _ op: chorus_reduce_op, _ error: UnsafeMutablePointer<chorus_error>?) -> chorus_status {
    blocking(comm, error) { try reduceScatter(send, receive, count, type, op) }
}

@_cdecl("chorus_all_gather")
public func chorus_all_gather(_ comm: OpaquePointer?, _ send: UnsafeRawPointer?, _ receive: UnsafeMutableRawPointer?, _ count: Int,
                              _ type: chorus_type, _ error: UnsafeMutablePointer<chorus_error>?) -> chorus_status {
    blocking(comm, error) { try allGather(send, receive, count, type) }
}

@_cdecl("chorus_broadcast")
public func chorus_broadcast(_ comm: OpaquePointer?, _ buffer: UnsafeMutableRawPointer?, _ count: Int, _ type: chorus_type,
                             _ root: Int32, _ error: UnsafeMutablePointer<chorus_error>?) -> chorus_status {
    blocking(comm, error) { try broadcast(buffer, count, type, root) }
}

@_cdecl("chorus_barrier")
public func chorus_barrier(_ comm: OpaquePointer?, _ error: UnsafeMutablePointer<chorus_error>?) -> chorus_status {
    blocking(comm, error) { barrier() }
}

@_cdecl("chorus_all_scan")
public func chorus_all_scan(_ comm: OpaquePointer?, _ state: UnsafeRawPointer?, _ exclusive: UnsafeMutableRawPointer?,
                            _ inclusive: UnsafeMutableRawPointer?, _ count: Int, _ type: chorus_type, _ op: chorus_scan_op,
                            _ decay: UnsafeRawPointer?, _ decayCount: Int, _ reverse: Int32,
                            _ error: UnsafeMutablePointer<chorus_error>?) -> chorus_status {
    blocking(comm, error) { try allScan(state, exclusive, inclusive, count, type, op, decay, decayCount, reverse) }
}

// MARK: - Non-blocking

@_cdecl("chorus_all_reduce_async")
public func chorus_all_reduce_async(_ comm: OpaquePointer?, _ send: UnsafeRawPointer?, _ receive: UnsafeMutableRawPointer?, _ count: Int,
                                    _ type: chorus_type, _ op: chorus_reduce_op, _ request: UnsafeMutablePointer<OpaquePointer?>?,
                                    _ error: UnsafeMutablePointer<chorus_error>?) -> chorus_status {
    queued(comm, request, error) { try allReduce(send, receive, count, type, op) }
}

@_cdecl("chorus_all_reduce_quantized_async")
public func chorus_all_reduce_quantized_async(_ comm: OpaquePointer?, _ send: UnsafeRawPointer?, _ receive: UnsafeMutableRawPointer?,
                                              _ count: Int, _ type: chorus_type, _ op: chorus_reduce_op, _ bits: Int32,
                                              _ scaling: Int32, _ block: Int, _ feedback: UnsafeMutablePointer<Float>?,
                                              _ request: UnsafeMutablePointer<OpaquePointer?>?,
                                              _ error: UnsafeMutablePointer<chorus_error>?) -> chorus_status {
    queued(comm, request, error) { try quantizedAllReduce(send, receive, count, type, op, bits, scaling, block, feedback) }
}

@_cdecl("chorus_reduce_scatter_async")
public func chorus_reduce_scatter_async(_ comm: OpaquePointer?, _ send: UnsafeRawPointer?, _ receive: UnsafeMutableRawPointer?,
                                        _ count: Int, _ type: chorus_type, _ op: chorus_reduce_op,
                                        _ request: UnsafeMutablePointer<OpaquePointer?>?,
                                        _ error: UnsafeMutablePointer<chorus_error>?) -> chorus_status {
    queued(comm, request, error) { try reduceScatter(send, receive, count, type, op) }
}

@_cdecl("chorus_all_gather_async")
public func chorus_all_gather_async(_ comm: OpaquePointer?, _ send: UnsafeRawPointer?, _ receive: UnsafeMutableRawPointer?, _ count: Int,
                                    _ type: chorus_type, _ request: UnsafeMutablePointer<OpaquePointer?>?,
                                    _ error: UnsafeMutablePointer<chorus_error>?) -> chorus_status {
    queued(comm, request, error) { try allGather(send, receive, count, type) }
}

@_cdecl("chorus_broadcast_async")
public func chorus_broadcast_async(_ comm: OpaquePointer?, _ buffer: UnsafeMutableRawPointer?, _ count: Int, _ type: chorus_type,
                                   _ root: Int32, _ request: UnsafeMutablePointer<OpaquePointer?>?,
                                   _ error: UnsafeMutablePointer<chorus_error>?) -> chorus_status {
    queued(comm, request, error) { try broadcast(buffer, count, type, root) }
}

@_cdecl("chorus_barrier_async")
public func chorus_barrier_async(_ comm: OpaquePointer?, _ request: UnsafeMutablePointer<OpaquePointer?>?,
                                 _ error: UnsafeMutablePointer<chorus_error>?) -> chorus_status {
    queued(comm, request, error) { barrier() }
}

@_cdecl("chorus_all_scan_async")
public func chorus_all_scan_async(_ comm: OpaquePointer?, _ state: UnsafeRawPointer?, _ exclusive: UnsafeMutableRawPointer?,
                                  _ inclusive: UnsafeMutableRawPointer?, _ count: Int, _ type: chorus_type, _ op: chorus_scan_op,
                                  _ decay: UnsafeRawPointer?, _ decayCount: Int, _ reverse: Int32,
                                  _ request: UnsafeMutablePointer<OpaquePointer?>?,
                                  _ error: UnsafeMutablePointer<chorus_error>?) -> chorus_status {
    queued(comm, request, error) { try allScan(state, exclusive, inclusive, count, type, op, decay, decayCount, reverse) }
}

// MARK: - Requests

@_cdecl("chorus_wait")
public func chorus_wait(_ request: OpaquePointer?, _ error: UnsafeMutablePointer<chorus_error>?) -> chorus_status {
    guard let request else { return report(ArgumentError("request is NULL"), into: error) }
    let failure = borrowed(request, as: RequestHandle.self).wait()
    release(request, as: RequestHandle.self)
    return failure.map { report($0, into: error) } ?? succeeded(error)
}

@_cdecl("chorus_test")
public func chorus_test(_ request: OpaquePointer?, _ error: UnsafeMutablePointer<chorus_error>?) -> chorus_status {
    guard let request else { return report(ArgumentError("request is NULL"), into: error) }
    switch borrowed(request, as: RequestHandle.self).result {
    case nil: return CHORUS_STATUS_PENDING
    case .some(nil): return succeeded(error)
    case .some(.some(let failure)): return report(failure, into: error)
    }
}
