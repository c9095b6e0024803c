/// Encoding and decoding of the control messages (layout in DESIGN.md, "Control messages").

private enum Kind: UInt8 {
    case register = 0x01, updateTopology = 0x02, report = 0x03, leave = 0x04, syncState = 0x05, begin = 0x06, rejoin = 0x07, unreachable = 0x08
    case committed = 0x09
    case registered = 0x41, topology = 0x42, verdict = 0x43, membershipPending = 0x44, left = 0x45, rejected = 0x46
    case syncPlan = 0x47, resumed = 0x48
    case hello = 0x81, stateRequest = 0x82, stateDone = 0x83
}

/// The largest topology a message may describe.
public let maximumWorldSize = 1 << 16

extension ByteWriter {
    fileprivate mutating func kind(_ k: Kind) { u8(k.rawValue) }
    mutating func address(_ a: PeerAddress) { string(a.host); u16(a.port) }
    mutating func topology(_ t: Topology) {
        u64(t.epoch); u32(UInt32(t.members.count))
        for m in t.members { u64(m.id); address(m.address) }
    }
    /// A u32 count, then the values.
    mutating func u64s(_ values: [UInt64]) { u32(UInt32(values.count)); values.forEach { u64($0) } }
    mutating func descriptor(_ d: OperationDescriptor) {
        u8(d.collective); u8(d.dataType); u8(d.reduceOp); u64(d.count); u64(d.detail)
    }
    mutating func outcome(_ o: Outcome) {
        switch o {
        case .success: u8(0)
        case .aborted(let reason):
            switch reason {
            case .peerLost(let id): u8(1); u64(id)
            case .linkFailed(let reporter, let peer, let detail): u8(2); u64(reporter); u64(peer ?? 0); string(detail)
            case .timedOut(let reporter, let notArrived): u8(3); u64(reporter); u32(UInt32(notArrived.count)); notArrived.forEach { u32($0) }
            case .argumentMismatch(let detail): u8(4); string(detail)
            case .staleEpoch: u8(5)
            case .peerLeft(let id): u8(6); u64(id)
            case .stateMismatch(let why): u8(7); string(why)
            case .stateSenderOutdated(let id): u8(8); u64(id)
            case .stateTransferFailed(let reporter, let detail): u8(9); u64(reporter); string(detail)
            case .topologyUpdateRequested(let id): u8(10); u64(id)
            }
        }
    }
}

extension ByteReader {
    mutating func u64s(limit: Int) throws(DecodeError) -> [UInt64] {
        let n = try count(minimumItemBytes: 8, limit: limit)
        var values: [UInt64] = []
        values.reserveCapacity(n)
        for _ in 0 ..< n { values.append(try u64()) }
        return values
    }
    mutating func descriptor() throws(DecodeError) -> OperationDescriptor {
        OperationDescriptor(collective: try u8(), dataType: try u8(), reduceOp: try u8(), count: try u64(), detail: try u64())
    }
    mutating func address() throws(DecodeError) -> PeerAddress {
        PeerAddress(host: try string(), port: try u16())
    }
    mutating func topology() throws(DecodeError) -> Topology {
        let epoch = try u64()
        // A member takes at least 8 (id) + 2 (host length) + 2 (port) bytes.
        let n = try count(minimumItemBytes: 12, limit: maximumWorldSize)
        var members: [Member] = []
        members.reserveCapacity(n)
        for _ in 0 ..< n { members.append(Member(id: try u64(), address: try address())) }
        return Topology(epoch: epoch, members: members)
    }
    mutating func outcome() throws(DecodeError) -> Outcome {
        switch try u8() {
        case 0: return .success
        case 1: return .aborted(.peerLost(try u64()))
        case 2:
            let reporter = try u64(), peer = try u64() // 0: not known (ids start at 1)
            return .aborted(.linkFailed(reporter: reporter, peer: peer == 0 ? nil : peer, detail: try string()))
        case 3:
            let reporter = try u64()
            let n = try count(minimumItemBytes: 4, limit: maximumWorldSize)
            var ranks: [UInt32] = []
            ranks.reserveCapacity(n)
            for _ in 0 ..< n { ranks.append(try u32()) }
            return .aborted(.timedOut(reporter: reporter, notArrived: ranks))
        case 4: return .aborted(.argumentMismatch(try string()))
        case 5: return .aborted(.staleEpoch)
        case 6: return .aborted(.peerLeft(try u64()))
        case 7: return .aborted(.stateMismatch(try string()))
        case 8: return .aborted(.stateSenderOutdated(try u64()))
        case 9: return .aborted(.stateTransferFailed(reporter: try u64(), detail: try string()))
        case 10: return .aborted(.topologyUpdateRequested(try u64()))
        case let other: throw DecodeError("unknown outcome \(other)")
        }
    }
    fileprivate mutating func kind() throws(DecodeError) -> Kind {
        let raw = try u8()
        guard let kind = Kind(rawValue: raw) else { throw DecodeError("unknown message kind \(raw)") }
        return kind
    }
}

extension PeerToMaster {
    public func encoded() -> [UInt8] {
        var w = ByteWriter()
        switch self {
        case .register(let listen, let peerGroup): w.kind(.register); w.address(listen); w.u32(peerGroup)
        case .updateTopology(let epoch, let minimum, let admitting, let ringOrder):
            w.kind(.updateTopology); w.u64(epoch); w.u32(minimum); w.u8(admitting ? 1 : 0); w.u64s(ringOrder)
        case .begin(let epoch, let opID, let d):
            w.kind(.begin); w.u64(epoch); w.u64(opID); w.descriptor(d)
        case .report(let epoch, let opID, let d, let outcome):
            w.kind(.report); w.u64(epoch); w.u64(opID); w.descriptor(d); w.outcome(outcome)
        case .committed(let epoch, let opID, let d):
            w.kind(.committed); w.u64(epoch); w.u64(opID); w.descriptor(d)
        case .leave(let epoch): w.kind(.leave); w.u64(epoch)
        case .syncState(let epoch, let opID, let digest): w.kind(.syncState); w.u64(epoch); w.u64(opID); w.digest(digest)
        case .rejoin(let r):
            w.kind(.rejoin); w.u64(r.peer); w.u64(r.group); w.u32(r.peerGroup); w.address(r.listen); w.topology(r.topology)
            w.u64(r.lastDecidedOp); w.outcome(r.lastOutcome)
            w.u8(r.lastSyncedRevision == nil ? 0 : 1); w.u64(r.lastSyncedRevision ?? 0); w.u8(r.leaving ? 1 : 0)
        case .unreachable(let epoch, let peer, let detail): w.kind(.unreachable); w.u64(epoch); w.u64(peer); w.string(detail)
        }
        return w.bytes
    }

    public init(decoding bytes: [UInt8]) throws(DecodeError) {
        var r = ByteReader(bytes)
        switch try r.kind() {
        case .register: self = .register(listen: try r.address(), peerGroup: try r.u32())
        case .updateTopology:
            self = .updateTopology(epoch: try r.u64(), minimumWorldSize: try r.u32(), admitting: try r.flag("admitting"),
                                   ringOrder: try r.u64s(limit: maximumWorldSize))
        case .begin: self = .begin(epoch: try r.u64(), opID: try r.u64(), descriptor: try r.descriptor())
        case .report:
            self = .report(epoch: try r.u64(), opID: try r.u64(), descriptor: try r.descriptor(), outcome: try r.outcome())
        case .committed: self = .committed(epoch: try r.u64(), opID: try r.u64(), descriptor: try r.descriptor())
        case .leave: self = .leave(epoch: try r.u64())
        case .syncState: self = .syncState(epoch: try r.u64(), opID: try r.u64(), try r.digest())
        case .rejoin:
            let peer = try r.u64(), group = try r.u64(), peerGroup = try r.u32(), listen = try r.address(), topology = try r.topology()
            let lastDecidedOp = try r.u64(), lastOutcome = try r.outcome()
            let hasRevision = try r.flag("has revision"), revision = try r.u64()
            guard hasRevision || revision == 0 else { throw DecodeError("a revision of \(revision) marked absent") }
            self = .rejoin(Rejoin(peer: peer, group: group, peerGroup: peerGroup, listen: listen, topology: topology, lastDecidedOp: lastDecidedOp, lastOutcome: lastOutcome,
                                  lastSyncedRevision: hasRevision ? revision : nil, leaving: try r.flag("leaving")))
        case .unreachable: self = .unreachable(epoch: try r.u64(), peer: try r.u64(), detail: try r.string())
        default: throw DecodeError("not a peer-to-master message")
        }
        try r.expectEnd()
    }
}

extension MasterToPeer {
    public func encoded() -> [UInt8] {
        var w = ByteWriter()
        switch self {
        case .registered(let id, let group): w.kind(.registered); w.u64(id); w.u64(group)
        case .topology(let t): w.kind(.topology); w.topology(t)
        case .verdict(let epoch, let opID, let outcome): w.kind(.verdict); w.u64(epoch); w.u64(opID); w.outcome(outcome)
        case .membershipPending(let joining, let leaving): w.kind(.membershipPending); w.u32(joining); w.u32(leaving)
        case .left: w.kind(.left)
        case .rejected(let why): w.kind(.rejected); w.string(why)
        case .syncPlan(let epoch, let opID, let plan): w.kind(.syncPlan); w.u64(epoch); w.u64(opID); w.plan(plan)
        case .resumed: w.kind(.resumed)
        }
        return w.bytes
    }

    public init(decoding bytes: [UInt8]) throws(DecodeError) {
        var r = ByteReader(bytes)
        switch try r.kind() {
        case .registered: self = .registered(try r.u64(), group: try r.u64())
        case .topology: self = .topology(try r.topology())
        case .verdict: self = .verdict(epoch: try r.u64(), opID: try r.u64(), outcome: try r.outcome())
        case .membershipPending: self = .membershipPending(joining: try r.u32(), leaving: try r.u32())
        case .left: self = .left
        case .rejected: self = .rejected(try r.string())
        case .syncPlan: self = .syncPlan(epoch: try r.u64(), opID: try r.u64(), try r.plan())
        case .resumed: self = .resumed
        default: throw DecodeError("not a master-to-peer message")
        }
        try r.expectEnd()
    }
}

extension PeerToPeer {
    public func encoded() -> [UInt8] {
        var w = ByteWriter()
        switch self {
        case .hello(let epoch, let from, let to, let link):
            w.kind(.hello); w.u64(epoch); w.u64(from); w.u64(to)
            switch link {
            case .ring(let lane, let lanes): w.u8(0); w.u16(lane); w.u16(lanes)
            case .mesh: w.u8(1); w.u16(0); w.u16(0)
            }
        case .stateRequest(let tensor, let offset, let length, let tag):
            w.kind(.stateRequest); w.u32(tensor); w.u64(offset); w.u32(length); w.u32(tag)
        case .stateDone: w.kind(.stateDone)
        }
        return w.bytes
    }

    public init(decoding bytes: [UInt8]) throws(DecodeError) {
        var r = ByteReader(bytes)
        switch try r.kind() {
        case .hello:
            let epoch = try r.u64(), from = try r.u64(), to = try r.u64()
            let kind = try r.u8(), lane = try r.u16(), lanes = try r.u16()
            switch kind {
            case 0: self = .hello(epoch: epoch, from: from, to: to, link: .ring(lane: lane, lanes: lanes))
            case 1 where lane == 0 && lanes == 0: self = .hello(epoch: epoch, from: from, to: to, link: .mesh)
            default: throw DecodeError("unknown link kind \(kind)")
            }
        case .stateRequest: self = .stateRequest(tensor: try r.u32(), offset: try r.u64(), length: try r.u32(), tag: try r.u32())
        case .stateDone: self = .stateDone
        default: throw DecodeError("not a peer-to-peer message")
        }
        try r.expectEnd()
    }
}
