import ChorusAlgorithms

/// The async forms of broadcast, reduce-scatter and all-gather (all-reduce, All-Scan, barrier and
/// membership have theirs beside their blocking forms). Each runs the blocking call on the
/// communicator's own queue, never on Swift's cooperative pool; arrays move there and back uncopied.
extension Communicator {
    /// Async broadcast of an array in place: `root`'s values replace everyone's.
    public func broadcast<Element: ChorusElement>(_ values: inout [Element], root: Int) async throws {
        let box = ArrayBox(values)
        values = []
        defer { values = box.values }
        try await offload(queue) { () throws in try self.broadcast(&box.values, root: root) }
    }

    /// Async broadcast of a raw buffer. The buffer must stay valid until it returns.
    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) async throws {
        nonisolated(unsafe) let buffer = buffer
        try await offload(queue) { () throws in try self.broadcast(buffer, root: root) }
    }

    /// Async reduce-scatter on an array (`values.count` a multiple of the world size).
    public func reduceScatter<Element: ChorusElement>(_ values: [Element], op: ReduceOp = .sum) async throws -> [Element] {
        try await offload(queue) { () throws in try self.reduceScatter(values, op: op) }
    }

    /// Async reduce-scatter of raw buffers. The buffers must stay valid until it returns.
    public func reduceScatter(send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer,
                              count: Int, dataType: DataType, op: ReduceOp = .sum) async throws {
        nonisolated(unsafe) let send = send, receive = receive
        try await offload(queue) { () throws in
            try self.reduceScatter(send: send, receive: receive, count: count, dataType: dataType, op: op)
        }
    }

    /// Async all-gather on an array.
    public func allGather<Element: ChorusElement>(_ values: [Element]) async throws -> [Element] {
        try await offload(queue) { () throws in try self.allGather(values) }
    }

    /// Async all-gather of raw buffers. The buffers must stay valid until it returns.
    public func allGather(send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer,
                          count: Int, dataType: DataType) async throws {
        nonisolated(unsafe) let send = send, receive = receive
        try await offload(queue) { () throws in
            try self.allGather(send: send, receive: receive, count: count, dataType: dataType)
        }
    }
}
