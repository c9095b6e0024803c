import ChorusProtocol
import CXXHash

public typealias SyncStrategy = ChorusProtocol.SyncStrategy

/// State that every peer must hold bit-identically (model weights, optimizer state): named tensors
/// plus a revision. Bump `revision` by one per training step, then call
/// `Communicator.synchronize(_:)` at a safe point; peers that are behind (joiners, peers that
/// skipped a step or drifted) receive the elected tensors in place.
///
/// Not thread-safe: do not touch it from another thread while `synchronize` runs.
public final class SharedState: @unchecked Sendable {
    /// Moves forward by exactly one per step; a peer whose revision is behind is outdated.
    public var revision: UInt64
    /// The tensors in the order they were added (every peer must add the same ones, in the same order).
    public private(set) var tensors: [SharedTensor] = []

    public init(revision: UInt64 = 0) {
        self.revision = revision
    }

    /// The tensor named `name`, if any.
    public subscript(name: String) -> SharedTensor? { tensors.first { $0.name == name } }

    /// Adds a tensor holding a copy of `values`; Chorus owns its memory.
    /// - Parameters:
    ///   - name: unique within this state, and the same on every member.
    ///   - values: the initial contents.
    ///   - allowedToDiffer: excluded from the election and never transferred (per-peer data).
    @discardableResult
    public func add<Element: ChorusElement>(_ name: String, values: [Element], allowedToDiffer: Bool = false) throws -> SharedTensor {
        let tensor = try add(name, count: values.count, dataType: Element.dataType, allowedToDiffer: allowedToDiffer)
        tensor.assign(values)
        return tensor
    }

    /// Adds a zero-filled tensor of `count` elements; Chorus owns its memory.
    @discardableResult
    public func add(_ name: String, count: Int, dataType: DataType, allowedToDiffer: Bool = false) throws -> SharedTensor {
        guard count >= 0 else { throw ChorusError.invalidArgument("tensor '\(name)' has a negative count \(count)") }
        let bytes = count * dataType.size
        let memory = UnsafeMutableRawPointer.allocate(byteCount: max(bytes, 1), alignment: 64)
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        return try append(SharedTensor(name: name, base: memory, count: count, dataType: dataType,
                                       allowedToDiffer: allowedToDiffer, owned: true))
    }

    /// Adds a tensor over memory the caller owns and keeps valid (and unmoved) for the life of this state.
    @discardableResult
    public func add(_ name: String, borrowing buffer: UnsafeMutableRawBufferPointer, dataType: DataType,
                    allowedToDiffer: Bool = false) throws -> SharedTensor {
        guard buffer.count % dataType.size == 0 else {
            throw ChorusError.invalidArgument("tensor '\(name)': \(buffer.count) bytes are not a whole number of \(dataType) elements")
        }
        let base = buffer.baseAddress ?? UnsafeMutableRawPointer(bitPattern: 64)! // never dereferenced when empty
        return try append(SharedTensor(name: name, base: base, count: buffer.count / dataType.size, dataType: dataType,
                                       allowedToDiffer: allowedToDiffer, owned: false))
    }

    private func append(_ tensor: SharedTensor) throws -> SharedTensor {
        guard !tensor.name.isEmpty, tensor.name.utf8.count <= 1024 else {
            throw ChorusError.invalidArgument("a tensor name must have 1 to 1024 bytes of UTF-8, not '\(tensor.name)'")
        }
        guard self[tensor.name] == nil else { throw ChorusError.invalidArgument("a tensor named '\(tensor.name)' exists already") }
        guard tensors.count < maximumSharedTensors else {
            throw ChorusError.invalidArgument("a shared state holds at most \(maximumSharedTensors) tensors")
        }
        tensors.append(tensor)
        return tensor
    }

    /// One hash over the revision and every tensor that may not differ: equal on every peer after a
    /// successful `synchronize` (handy for logs and checks).
    public var contentHash: UInt64 {
        var words = [revision]
        for tensor in tensors where !tensor.allowedToDiffer { words.append(tensor.hash) }
        return words.withUnsafeBytes { XXH3_64bits($0.baseAddress, $0.count) }
    }

    func digest(strategy: SyncStrategy) -> StateDigest {
        StateDigest(revision: revision, strategy: strategy, tensors: tensors.map {
            TensorDigest(name: $0.name, dataType: $0.dataType.rawValue, count: UInt64($0.count),
                         allowedToDiffer: $0.allowedToDiffer, hash: $0.allowedToDiffer ? 0 : $0.hash)
        })
    }
}

/// One named tensor of a `SharedState`.
public final class SharedTensor: @unchecked Sendable {
    public let name: String
    public let dataType: DataType
    public let count: Int
    public let allowedToDiffer: Bool
    let base: UnsafeMutableRawPointer
    private let owned: Bool

    fileprivate init(name: String, base: UnsafeMutableRawPointer, count: Int, dataType: DataType,
                     allowedToDiffer: Bool, owned: Bool) {
        self.name = name
        self.base = base
        self.count = count
        self.dataType = dataType
        self.allowedToDiffer = allowedToDiffer
        self.owned = owned
    }

    deinit { if owned { base.deallocate() } }

    public var byteCount: Int { count * dataType.size }

    /// 64-bit xxHash3 (Debian's libxxhash) of the tensor's bytes.
    public var hash: UInt64 { XXH3_64bits(base, byteCount) }

    /// Reads and writes the elements in place. `Element` must match the tensor's data type.
    public func withUnsafeMutableBufferPointer<Element: ChorusElement, Result>(
        as type: Element.Type, _ body: (UnsafeMutableBufferPointer<Element>) throws -> Result) rethrows -> Result {
        precondition(Element.dataType == dataType, "tensor '\(name)' holds \(dataType), not \(Element.dataType)")
        return try body(UnsafeMutableBufferPointer(start: base.assumingMemoryBound(to: Element.self), count: count))
    }

    /// Reads and writes the raw bytes in place, whatever the data type.
    public func withUnsafeMutableBytes<Result>(_ body: (UnsafeMutableRawBufferPointer) throws -> Result) rethrows -> Result {
        try body(UnsafeMutableRawBufferPointer(start: base, count: byteCount))
    }

    /// A copy of the elements.
    public func values<Element: ChorusElement>(as type: Element.Type) -> [Element] {
        withUnsafeMutableBufferPointer(as: type) { Array($0) }
    }

    /// Overwrites every element (`values.count` must equal `count`).
    public func assign<Element: ChorusElement>(_ values: [Element]) {
        precondition(values.count == count, "tensor '\(name)' has \(count) elements, not \(values.count)")
        guard count > 0 else { return }
        withUnsafeMutableBufferPointer(as: Element.self) { target in
            values.withUnsafeBufferPointer { target.baseAddress!.update(from: $0.baseAddress!, count: count) }
        }
    }
}

/// What `synchronize` did at this peer.
public struct SyncResult: Sendable, Hashable {
    /// The elected revision, now this peer's.
    public let revision: UInt64
    /// True when this peer was outdated (it received tensors, or only the revision).
    public let wasOutdated: Bool
    /// Names of the tensors this peer received.
    public let receivedTensors: [String]
    /// Bytes this peer received.
    public let bytesReceived: Int
    /// Bytes this peer served to outdated members (delivered sends).
    public let bytesSent: Int
    /// The members that held the elected state and served it (empty when nobody was outdated).
    public let sources: [PeerID]
    /// Sources this peer lost during its transfer (their chunks came from the others).
    public let lostSources: [PeerID]
}

/// How far an outdated peer's transfer has come; passed to `synchronize`'s progress callback.
public struct SyncProgress: Sendable, Hashable {
    public let bytesReceived: Int
    public let bytesTotal: Int
    public init(bytesReceived: Int, bytesTotal: Int) {
        self.bytesReceived = bytesReceived
        self.bytesTotal = bytesTotal
    }
}
