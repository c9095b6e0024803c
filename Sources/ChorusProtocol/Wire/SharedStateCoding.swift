/// Encoding of the shared-state parts of control messages (layout in DESIGN.md, "Control messages").

/// The most tensors one shared state may hold.
public let maximumSharedTensors = 1 << 16

extension ByteWriter {
    mutating func digest(_ d: StateDigest) {
        u64(d.revision); u8(d.strategy.rawValue); u32(UInt32(d.tensors.count))
        for t in d.tensors {
            string(t.name); u8(t.dataType); u64(t.count); u8(t.allowedToDiffer ? 1 : 0); u64(t.hash)
        }
    }

    mutating func plan(_ p: SyncPlan) {
        u64(p.revision)
        u64s(p.hashes)
        u64s(p.sources)
        u32(UInt32(p.receivers.count))
        for receiver in p.receivers {
            u64(receiver.id); u32(UInt32(receiver.tensors.count)); receiver.tensors.forEach { u32($0) }
        }
    }
}

extension ByteReader {
    mutating func digest() throws(DecodeError) -> StateDigest {
        let revision = try u64()
        let raw = try u8()
        guard let strategy = SyncStrategy(rawValue: raw) else { throw DecodeError("unknown sync strategy \(raw)") }
        // A tensor takes at least 2 (name length) + 1 + 8 + 1 + 8 bytes.
        let n = try count(minimumItemBytes: 20, limit: maximumSharedTensors)
        var tensors: [TensorDigest] = []
        tensors.reserveCapacity(n)
        for _ in 0 ..< n {
            let name = try string(), dataType = try u8(), count = try u64(), allowedToDiffer = try flag("allowed-to-differ")
            tensors.append(TensorDigest(name: name, dataType: dataType, count: count, allowedToDiffer: allowedToDiffer, hash: try u64()))
        }
        return StateDigest(revision: revision, strategy: strategy, tensors: tensors)
    }

    mutating func plan() throws(DecodeError) -> SyncPlan {
        let revision = try u64()
        let hashes = try u64s(limit: maximumSharedTensors)
        let sources = try u64s(limit: maximumWorldSize)
        let n = try count(minimumItemBytes: 12, limit: maximumWorldSize)
        var receivers: [SyncPlan.Receiver] = []
        receivers.reserveCapacity(n)
        for _ in 0 ..< n {
            let id = try u64()
            let m = try count(minimumItemBytes: 4, limit: maximumSharedTensors)
            var tensors: [UInt32] = []
            tensors.reserveCapacity(m)
            for _ in 0 ..< m { tensors.append(try u32()) }
            receivers.append(SyncPlan.Receiver(id: id, tensors: tensors))
        }
        return SyncPlan(revision: revision, hashes: hashes, sources: sources, receivers: receivers)
    }
}
