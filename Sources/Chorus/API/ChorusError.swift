import ChorusAlgorithms
import ChorusProtocol

public typealias DataType = ChorusAlgorithms.DataType
public typealias ReduceOp = ChorusAlgorithms.ReduceOp
public typealias ScanOperator = ChorusAlgorithms.ScanOperator
public typealias Quantization = ChorusAlgorithms.Quantization
public typealias AbortReason = ChorusProtocol.AbortReason
public typealias PeerID = ChorusProtocol.PeerID

/// The one error type of the public API. `isRetryable` tells a training loop what to do:
/// retryable errors leave the input restored and want `updateTopology()` then a retry; the others
/// want the caller to fix its call or reconnect.
public enum ChorusError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The collective's verdict was abort: every surviving peer got this same error, and the input
    /// is restored. Call `updateTopology()` and retry.
    case aborted(AbortReason)
    /// An earlier collective in this epoch aborted; call `updateTopology()` first.
    case topologyUpdateRequired
    /// The ring for the new epoch could not be connected (a neighbour died meanwhile); call
    /// `updateTopology()` again.
    case topologyFailed(String)
    /// The call itself is wrong (sizes, types, a closed communicator).
    case invalidArgument(String)
    /// The master cannot be reached, or its connection died.
    case masterUnreachable(String)
    /// The master no longer counts this peer as a member; create a new communicator to rejoin.
    case evicted(String)
    /// Waiting for the master (admission, topology update, leave) passed its deadline.
    case timedOut(String)
    /// A local resource (socket, thread) could not be set up.
    case setupFailed(String)
    /// The master or a neighbour refused this peer's handshake, or did not prove it holds the shared
    /// secret: a wrong or missing secret on one side (`Configuration.secret`).
    case authenticationFailed(String)

    /// True when the caller should call `updateTopology()` and try the collective again.
    public var isRetryable: Bool {
        switch self {
        case .aborted(.argumentMismatch), .aborted(.stateMismatch), .aborted(.stateSenderOutdated): false
        case .aborted: true
        case .topologyUpdateRequired, .topologyFailed: true
        default: false
        }
    }

    public var description: String {
        switch self {
        case .aborted(let reason): "collective aborted: \(reason)"
        case .topologyUpdateRequired: "a collective aborted in this epoch; call updateTopology()"
        case .topologyFailed(let why): "could not connect the ring: \(why)"
        case .invalidArgument(let why): "invalid argument: \(why)"
        case .masterUnreachable(let why): "master unreachable: \(why)"
        case .evicted(let why): "evicted: \(why)"
        case .timedOut(let why): "timed out: \(why)"
        case .setupFailed(let why): "setup failed: \(why)"
        case .authenticationFailed(let why): "authentication failed: \(why)"
        }
    }
}
