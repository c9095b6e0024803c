import ChorusProtocol
import Logging

/// How `Communicator.withRetry` treats failures.
public struct RetryPolicy: Sendable {
    /// Attempts in all (at least 1); after the last, its retryable error is thrown.
    public var maxAttempts: Int
    /// Passed to `updateTopology(minimumWorldSize:)` whenever the group is re-formed.
    public var minimumWorldSize: Int

    public init(maxAttempts: Int = 10, minimumWorldSize: Int = 1) {
        self.maxAttempts = max(1, maxAttempts)
        self.minimumWorldSize = minimumWorldSize
    }
}

/// The retry loop every training step needs, written once: re-form the group on a retryable error
/// (an abort every survivor saw, a ring that could not connect), bring the shared state in line,
/// and run the step again with the new world.
extension Communicator {
    /// Runs one training step, retrying it on retryable errors.
    ///
    /// Before each attempt: if peers wait to join or leave, or the previous attempt failed,
    /// `updateTopology(minimumWorldSize:)` re-forms the group (admitting joiners); then, when `state`
    /// is given, `synchronize(state, strategy:)` makes it identical everywhere (one round trip when
    /// nobody is outdated; a joiner catches up here). Then `step` runs. Every collective inside it
    /// that aborts restores its input, so the step can simply run again; it must not have changed
    /// anything else the retry would count twice (bump `state.revision` as its last statement).
    /// Every member must call `withRetry` at the same points, as with any collective.
    /// - Parameters:
    ///   - state: shared state to synchronize before each attempt, or nil.
    ///   - strategy: the synchronization strategy (`.elect` suits members and joiners alike).
    ///   - policy: attempts and the minimum world size for re-forming.
    ///   - step: the work; it receives the attempt number (1 on the first try).
    /// - Returns: what `step` returned.
    /// - Throws: a non-retryable `ChorusError` at once (mismatched calls, eviction, a lost master,
    ///   invalid arguments); a retryable one after `policy.maxAttempts` attempts; any other error
    ///   `step` throws, unchanged and without retrying.
    @discardableResult
    public func withRetry<Result>(synchronizing state: SharedState? = nil, strategy: SyncStrategy = .elect,
                                  policy: RetryPolicy = RetryPolicy(),
                                  _ step: (_ attempt: Int) throws -> Result) throws -> Result {
        var reform = topologyChangePending
        var attempt = 1
        while true {
            do {
                if reform { try updateTopology(minimumWorldSize: policy.minimumWorldSize) }
                if let state { try synchronize(state, strategy: strategy) }
                return try step(attempt)
            } catch let error as ChorusError where error.isRetryable && attempt < policy.maxAttempts {
                retryLogger?.notice("attempt \(attempt) of \(policy.maxAttempts) failed (\(error)); re-forming the group")
                reform = true
                attempt += 1
            }
        }
    }

    /// Async form of `withRetry(synchronizing:strategy:policy:_:)`: the step may await.
    @discardableResult
    public func withRetry<Result>(synchronizing state: SharedState? = nil, strategy: SyncStrategy = .elect,
                                  policy: RetryPolicy = RetryPolicy(),
                                  _ step: (_ attempt: Int) async throws -> Result) async throws -> Result {
        var reform = topologyChangePending
        var attempt = 1
        while true {
            do {
                if reform { try await updateTopology(minimumWorldSize: policy.minimumWorldSize) }
                if let state { try await synchronize(state, strategy: strategy) }
                return try await step(attempt)
            } catch let error as ChorusError where error.isRetryable && attempt < policy.maxAttempts {
                retryLogger?.notice("attempt \(attempt) of \(policy.maxAttempts) failed (\(error)); re-forming the group")
                reform = true
                attempt += 1
            }
        }
    }

    /// This peer's logger (with its identity), if the communicator is still in the group.
    private var retryLogger: Logger? { try? withCore { core in core.session?.logger } }
}
