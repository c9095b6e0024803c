import CChorus
import Chorus

/// An argument the C caller got wrong, found before anything reaches the communicator.
struct ArgumentError: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

/// The status of an error, with its retryable flag and message written into `out` (when given).
func report(_ error: any Error, into out: UnsafeMutablePointer<chorus_error>?) -> chorus_status {
    let status: chorus_status, message: String
    var retryable = false
    switch error {
    case let error as ChorusError:
        retryable = error.isRetryable
        message = error.description
        switch error {
        case .aborted: status = CHORUS_STATUS_ABORTED
        case .topologyUpdateRequired: status = CHORUS_STATUS_TOPOLOGY_UPDATE_REQUIRED
        case .topologyFailed: status = CHORUS_STATUS_TOPOLOGY_FAILED
        case .invalidArgument: status = CHORUS_STATUS_INVALID_ARGUMENT
        case .masterUnreachable: status = CHORUS_STATUS_MASTER_UNREACHABLE
        case .evicted: status = CHORUS_STATUS_EVICTED
        case .timedOut: status = CHORUS_STATUS_TIMED_OUT
        case .setupFailed: status = CHORUS_STATUS_SETUP_FAILED
        case .authenticationFailed: status = CHORUS_STATUS_AUTHENTICATION_FAILED
        }
    case let error as ArgumentError:
        status = CHORUS_STATUS_INVALID_ARGUMENT
        message = "invalid argument: \(error.message)"
    default:
        status = CHORUS_STATUS_SETUP_FAILED
        message = "\(error)"
    }
    if let out {
        out.pointee.code = Int32(status.rawValue)
        out.pointee.retryable = retryable ? 1 : 0
        withUnsafeMutableBytes(of: &out.pointee.message) { bytes in
            let utf8 = Array(message.utf8.prefix(bytes.count - 1))
            bytes.copyBytes(from: utf8)
            bytes[utf8.count] = 0
        }
    }
    return status
}

/// Clears `out` for a success.
func succeeded(_ out: UnsafeMutablePointer<chorus_error>?) -> chorus_status {
    if let out {
        out.pointee.code = Int32(CHORUS_STATUS_OK.rawValue)
        out.pointee.retryable = 0
        withUnsafeMutableBytes(of: &out.pointee.message) { $0[0] = 0 }
    }
    return CHORUS_STATUS_OK
}

/// Runs `body`, turning what it throws into a status.
func guarded(_ out: UnsafeMutablePointer<chorus_error>?, _ body: () throws -> Void) -> chorus_status {
    do {
        try body()
        return succeeded(out)
    } catch {
        return report(error, into: out)
    }
}

/// The handle's object, or an invalid-argument error naming the parameter.
func object<T: AnyObject>(_ pointer: OpaquePointer?, _ name: String, as type: T.Type) throws -> T {
    guard let pointer else { throw ArgumentError("\(name) is NULL") }
    return borrowed(pointer, as: type)
}

func dataType(_ type: chorus_type) throws -> DataType {
    guard let value = UInt8(exactly: type.rawValue), let dataType = DataType(rawValue: value) else {
        throw ArgumentError("unknown chorus_type \(type.rawValue)")
    }
    return dataType
}

func reduceOp(_ op: chorus_reduce_op) throws -> ReduceOp {
    guard let value = UInt8(exactly: op.rawValue), let op = ReduceOp(rawValue: value) else {
        throw ArgumentError("unknown chorus_reduce_op \(op.rawValue)")
    }
    return op
}

/// `count` elements of `type` at `pointer`: NULL only when empty.
func bytes(_ pointer: UnsafeRawPointer?, _ count: Int, _ type: DataType, _ name: String) throws -> UnsafeRawBufferPointer {
    guard count >= 0, count <= Int.max / max(1, type.size) else { throw ArgumentError("\(name): count \(count) is out of range") }
    guard pointer != nil || count == 0 else { throw ArgumentError("\(name) is NULL") }
    return UnsafeRawBufferPointer(start: pointer, count: count * type.size)
}

func mutableBytes(_ pointer: UnsafeMutableRawPointer?, _ count: Int, _ type: DataType, _ name: String) throws -> UnsafeMutableRawBufferPointer {
    UnsafeMutableRawBufferPointer(mutating: try bytes(pointer, count, type, name))
}
