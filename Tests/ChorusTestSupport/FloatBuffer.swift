/// Memory a collective reads and writes, owned apart from any array: an async call or an operation
/// in flight keeps using it until it returns, and a test reads it after the call threw.
public final class FloatBuffer: @unchecked Sendable {
    public let pointer: UnsafeMutableBufferPointer<Float>

    public init(_ values: [Float]) {
        pointer = .allocate(capacity: max(1, values.count))
        _ = pointer.initialize(from: values)
    }

    /// `count` elements of -1 (a value no test's result has).
    public init(count: Int) {
        pointer = .allocate(capacity: max(1, count))
        pointer.initialize(repeating: -1)
    }

    public var values: [Float] { Array(pointer) }
    public var raw: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(pointer) }

    deinit { pointer.deallocate() }
}
