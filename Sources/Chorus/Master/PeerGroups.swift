import ChorusProtocol
import ChorusTransport

/// The master's peer groups (`Configuration.peerGroup`): one `MasterStateMachine` each, with its
/// own members, epochs, operations, shared state and safe points, so a fault or a re-forming in one
/// never touches another. A connection belongs to the group its `register` or `rejoin` names (a
/// stranger's first message goes to group 0, which refuses it); peer ids are per group.
struct PeerGroups {
    typealias Machine = MasterStateMachine<ConnectionID>
    /// An action, with the epoch of the group it came from (its control frame's header).
    typealias Action = (action: Machine.Action, epoch: UInt64)

    struct Group {
        var machine: Machine
        /// When members of a group that lost its master started returning here (re-adoption).
        var adoptionStarted: ContinuousClock.Instant?
    }

    private(set) var groups: [UInt32: Group] = [:]
    private var groupOf: [ConnectionID: UInt32] = [:]
    /// Groups whose epoch, members or registrations changed since `takeChanges()`, and the epochs
    /// formed meanwhile.
    private var changed = false
    private var formed: [(group: UInt32, epoch: UInt64, members: Int)] = []
    private let makeMachine: (_ holdingFirstAdmission: Bool) -> Machine
    private var holdEnded = false
    /// Groups that ended here (every member gone), by identity (`MasterStateMachine.group`), with
    /// their last epoch: the newest `endedKept`. A member returning to one from an earlier epoch
    /// was dropped while the group went on, and is told so; without this it started the
    /// re-adoption meant for a restarted master and waited for members that had left. Members
    /// returning from the last epoch are re-adopted, as after a restart (the master lost them all).
    private var ended: [(group: UInt64, epoch: UInt64)] = []
    static let endedKept = 1024

    init(makeMachine: @escaping (_ holdingFirstAdmission: Bool) -> Machine) { self.makeMachine = makeMachine }

    /// The group of a registered (or returning) connection.
    func group(of connection: ConnectionID) -> UInt32? { groupOf[connection] }
    func machine(of connection: ConnectionID) -> Machine? { groupOf[connection].flatMap { groups[$0]?.machine } }
    func epoch(of group: UInt32) -> UInt64 { groups[group]?.machine.epoch ?? 0 }

    /// Members the safe points of all groups wait for (see `MasterStateMachine`).
    var membersHoldingUpTheSafePoint: [ConnectionID] { groups.values.flatMap(\.machine.membersHoldingUpTheSafePoint) }

    /// The group a first message names.
    static func named(by message: PeerToMaster) -> UInt32 {
        switch message {
        case .register(_, let peerGroup): peerGroup
        case .rejoin(let rejoin): rejoin.peerGroup
        default: 0
        }
    }

    mutating func received(_ message: PeerToMaster, from connection: ConnectionID) -> [Action] {
        if groupOf[connection] == nil, case .rejoin(let rejoin) = message, groups[rejoin.peerGroup]?.machine.group != rejoin.group,
           let last = ended.last(where: { $0.group == rejoin.group })?.epoch, rejoin.topology.epoch < last {
            let reason = "peer \(rejoin.peer) is not in this master's group (it was dropped in epoch \(rejoin.topology.epoch); "
                + "the group went on to epoch \(last) and has ended since)"
            return [(.send(connection, .rejected(reason)), 0), (.close(connection), 0)]
        }
        return update(groupOf[connection] ?? Self.named(by: message), about: connection) { $0.machine.received(message, from: connection) }
    }

    mutating func receivedMalformed(from connection: ConnectionID, reason: String) -> [Action] {
        update(groupOf[connection] ?? 0, about: connection) { $0.machine.receivedMalformed(from: connection, reason: reason) }
    }

    mutating func fenceAnswered(_ connection: ConnectionID, epoch: UInt64, opID: UInt64, vouched: Bool) -> [Action] {
        guard let id = groupOf[connection] else { return [] }
        return update(id, about: connection) { $0.machine.fenceAnswered(connection, epoch: epoch, opID: opID, vouched: vouched) }
    }

    mutating func connectionClosed(_ connection: ConnectionID) -> [Action] {
        guard let id = groupOf[connection] else { return [] } // never registered: no group knows it
        return update(id, about: connection) { $0.machine.connectionClosed(connection) }
    }

    /// The master closed `connection`: it leaves the routing unless its group still counts it.
    mutating func forget(_ connection: ConnectionID) {
        if let id = groupOf[connection], groups[id]?.machine.knows(connection) != true { groupOf[connection] = nil }
    }

    /// Ends the first admission's hold in every group, and for groups made from now on.
    mutating func endFirstAdmissionHold() -> [Action] {
        holdEnded = true
        return eachGroup { group, _ in group.machine.endFirstAdmissionHold() }
    }

    /// Notes the start of a group's re-adoption when a member's rejoin began one (or found the
    /// group adopted at once); true when it did.
    mutating func noteRejoin(of connection: ConnectionID, epochBefore: UInt64, now: ContinuousClock.Instant) -> Bool {
        guard let id = groupOf[connection], let group = groups[id], group.adoptionStarted == nil,
              group.machine.isAdopting || epochBefore == 0 && group.machine.epoch > 0 else { return false }
        groups[id]!.adoptionStarted = now
        return true
    }

    /// Ends the re-adoptions that waited `window` for their members; the groups it ended.
    mutating func endOverdueAdoptions(window: Duration, now: ContinuousClock.Instant) -> (actions: [Action], ended: [UInt32]) {
        var ended: [UInt32] = []
        let actions = eachGroup { group, id in
            guard let started = group.adoptionStarted, group.machine.isAdopting, now - started >= window else { return [] }
            ended.append(id)
            return group.machine.endAdoption()
        }
        return (actions, ended)
    }

    /// Groups whose re-adoption is over since the last call: how long it took, the epoch and members.
    mutating func finishedAdoptions(now: ContinuousClock.Instant) -> [(group: UInt32, took: Duration, epoch: UInt64, members: Int)] {
        var finished: [(UInt32, Duration, UInt64, Int)] = []
        for (id, group) in groups {
            guard let started = group.adoptionStarted, !group.machine.isAdopting else { continue }
            groups[id]?.adoptionStarted = nil
            finished.append((id, now - started, group.machine.epoch, group.machine.worldSize))
        }
        return finished
    }

    /// Whether a group's epoch, members or registrations changed since the last call (the status to
    /// publish), and the epochs formed meanwhile.
    mutating func takeChanges() -> (changed: Bool, formed: [(group: UInt32, epoch: UInt64, members: Int)]) {
        defer { changed = false; formed = [] }
        return (changed, formed)
    }

    var status: Master.MasterStatus {
        var status = Master.MasterStatus()
        for (id, group) in groups where group.machine.registeredCount > 0 || group.machine.epoch > 0 {
            let one = Master.MasterStatus.PeerGroupStatus(epoch: group.machine.epoch, worldSize: group.machine.worldSize,
                                                   pendingPeers: group.machine.pendingCount)
            status.peerGroups[id] = one
            status.epoch = max(status.epoch, one.epoch)
            status.worldSize += one.worldSize
            status.pendingPeers += one.pendingPeers
        }
        return status
    }

    private mutating func update(_ id: UInt32, about connection: ConnectionID, _ body: (inout Group) -> [Machine.Action]) -> [Action] {
        if groups[id] == nil { groups[id] = Group(machine: makeMachine(!holdEnded)) }
        let actions = run(id, body)
        let machine = groups[id]!.machine
        groupOf[connection] = machine.knows(connection) ? id : nil
        // A group nobody is registered in (or returning to) goes: anyone who can reach the master
        // could otherwise leave a machine behind for every group number it names.
        if machine.registeredCount == 0 && !machine.isAdopting {
            groups[id] = nil
            changed = true
            if machine.epoch > 0 {
                ended.append((machine.group, machine.epoch))
                if ended.count > Self.endedKept { ended.removeFirst() }
            }
        }
        return actions
    }

    private mutating func eachGroup(_ body: (inout Group, UInt32) -> [Machine.Action]) -> [Action] {
        groups.keys.sorted().flatMap { id in run(id) { body(&$0, id) } }
    }

    /// Runs `body` on group `id` in place (a copy taken out of the dictionary and put back would
    /// copy the machine's tables on every message) and notes what changed.
    private mutating func run(_ id: UInt32, _ body: (inout Group) -> [Machine.Action]) -> [Action] {
        func summary(_ machine: Machine) -> (epoch: UInt64, members: Int, registered: Int) {
            (machine.epoch, machine.worldSize, machine.registeredCount)
        }
        let before = summary(groups[id]!.machine)
        let actions = body(&groups[id]!)
        let after = summary(groups[id]!.machine)
        if after != before { changed = true }
        if after.epoch != before.epoch { formed.append((id, after.epoch, after.members)) }
        return actions.map { ($0, after.epoch) }
    }
}
