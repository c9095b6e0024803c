import ChorusAlgorithms
import ChorusProtocol

/// An operation whose data phase is over and whose verdict may still be on its way (see `start`).
/// Touched only under the communicator's lock.
final class InFlightOperation: @unchecked Sendable {
    let opID: UInt64
    let descriptor: OperationDescriptor
    let deadline: ContinuousClock.Instant
    /// The verdict when it was known before the report (an abort that came while the data moved).
    var verdict: Outcome?
    /// Why its data phase failed here, if it did: a success verdict then means its partner in a
    /// pair committed it without this member (`PairToken`), which the master evicts.
    var failedHere: AbortReason?
    /// Puts back an in-place input on an abort; dropped once the verdict is taken.
    var restore: (() -> Void)?
    /// What waiting for it returns, once its verdict has been taken.
    var result: Result<Void, ChorusError>?

    init(opID: UInt64, descriptor: OperationDescriptor, deadline: ContinuousClock.Instant, restore: (() -> Void)?) {
        self.opID = opID
        self.descriptor = descriptor
        self.deadline = deadline
        self.restore = restore
    }

    /// An operation decided without moving data (alone in the world, or after the epoch broke).
    static func settled(_ result: Result<Void, ChorusError>) -> InFlightOperation {
        let operation = InFlightOperation(opID: 0, descriptor: OperationDescriptor(collective: 0, dataType: 0, reduceOp: 0, count: 0),
                                          deadline: .now, restore: nil)
        operation.result = result
        return operation
    }
}

/// Memory an operation in flight overwrites, copied aside (the shared backups serve only the
/// operation that runs to its verdict at once).
private final class SavedInput: @unchecked Sendable {
    private let buffer: UnsafeMutableRawPointer
    private let saved: UnsafeMutableRawPointer
    private let bytes: Int

    init(_ buffer: UnsafeMutableRawPointer, bytes: Int) {
        self.buffer = buffer
        self.bytes = bytes
        saved = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        saved.copyMemory(from: buffer, byteCount: bytes)
    }

    func restore() { buffer.copyMemory(from: saved, byteCount: bytes) }

    deinit { saved.deallocate() }
}

/// Operations in flight: the data of each moves in the order they are started, and their verdicts
/// are taken later, so the master's round trip of one overlaps the data of the next. The master
/// decides them in order and an abort is also the verdict of every later operation of the epoch
/// (DESIGN.md, "Operations in flight").
extension Core {
    /// Moves a collective's data and reports it, without waiting for its verdict (`plan` gives
    /// what it moves; nil: alone, done locally); with `operationsInFlight` already waiting, the
    /// oldest verdict is taken first.
    func start(_ plan: (PeerSession) throws(ChorusError) -> OperationPlan?) throws(ChorusError) -> InFlightOperation {
        let session = try openSession()
        while inFlight.count >= session.configuration.operationsInFlight { settleOldest() }
        if session.needsTopologyUpdate {
            // An operation in flight aborted and its verdict has been taken: every later one of the
            // epoch has the same verdict, which members still moving data get from the master.
            guard case .aborted(let reason)? = session.verdict(for: session.nextOpID) else { throw .topologyUpdateRequired }
            _ = session.takeOperationID()
            return .settled(.failure(.aborted(reason)))
        }
        guard let plan = try plan(session) else { return .settled(.success(())) }
        let saved = plan.overwritten.filter { $0.bytes > 0 }.map { SavedInput($0.pointer, bytes: $0.bytes) }
        let operation = try moveData(session: session, opID: session.takeOperationID(),
                                     deadline: .now + session.configuration.operationTimeout, descriptor: plan.descriptor,
                                     route: plan.route, restore: saved.isEmpty ? nil : { saved.forEach { $0.restore() } },
                                     dataPhase: plan.run)
        inFlight.append(operation)
        return operation
    }

    /// Takes the verdicts of the operations in flight up to `operation` (verdicts come in order).
    func settle(through operation: InFlightOperation) {
        while operation.result == nil, !inFlight.isEmpty { settleOldest() }
    }

    /// Takes the verdicts that have arrived, without waiting for any.
    func settleArrivedVerdicts() {
        guard let session else { return }
        session.drainEvents()
        while let oldest = inFlight.first, oldest.verdict != nil || session.verdict(for: oldest.opID) != nil
                || session.masterLossError != nil {
            settleOldest()
        }
    }

    /// Takes every verdict still owed: before a blocking call, a safe point or a leave.
    func settleAllInFlight() {
        while !inFlight.isEmpty { settleOldest() }
    }

    private func settleOldest() {
        let operation = inFlight.removeFirst()
        guard let session else {
            operation.result = .failure(.invalidArgument("this communicator has left the group"))
            return
        }
        do {
            try settle(operation, session: session)
            operation.result = .success(())
        } catch {
            operation.result = .failure(error)
        }
    }
}
