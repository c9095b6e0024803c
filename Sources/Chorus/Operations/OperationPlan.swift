import ChorusProtocol

/// One collective of two or more members, ready to run: what it tells the master, which links it
/// uses, the caller memory it overwrites (put back if it aborts), and its data phase. The same plan
/// runs to its verdict at once (`Core.run`) or in flight (`Core.start`).
struct OperationPlan {
    let descriptor: OperationDescriptor
    /// nil: no data (a barrier).
    let route: Route?
    var overwritten: [(pointer: UnsafeMutableRawPointer, bytes: Int)] = []
    let run: (OperationLinks) throws -> Void
}
