import CChorus
import Chorus

@_cdecl("chorus_state_create")
public func chorus_state_create(_ revision: UInt64, _ out: UnsafeMutablePointer<OpaquePointer?>?,
                                _ error: UnsafeMutablePointer<chorus_error>?) -> chorus_status {
    guarded(error) {
        guard let out else { throw ArgumentError("out is NULL") }
        out.pointee = retained(StateHandle(SharedState(revision: revision)))
    }
}

@_cdecl("chorus_state_destroy")
public func chorus_state_destroy(_ state: OpaquePointer?) {
    if let state { release(state, as: StateHandle.self) }
}

@_cdecl("chorus_state_add_tensor")
public func chorus_state_add_tensor(_ state: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ memory: UnsafeMutableRawPointer?,
                                    _ count: Int, _ type: chorus_type, _ allowedToDiffer: Int32,
                                    _ error: UnsafeMutablePointer<chorus_error>?) -> chorus_status {
    guarded(error) {
        let handle = try object(state, "state", as: StateHandle.self)
        guard let name else { throw ArgumentError("name is NULL") }
        let dataType = try dataType(type)
        try handle.state.add(String(cString: name), borrowing: try mutableBytes(memory, count, dataType, "memory"),
                             dataType: dataType, allowedToDiffer: allowedToDiffer != 0)
    }
}

@_cdecl("chorus_state_revision")
public func chorus_state_revision(_ state: OpaquePointer?) -> UInt64 {
    guard let state else { return 0 }
    return borrowed(state, as: StateHandle.self).state.revision
}

@_cdecl("chorus_state_set_revision")
public func chorus_state_set_revision(_ state: OpaquePointer?, _ revision: UInt64) {
    guard let state else { return }
    borrowed(state, as: StateHandle.self).state.revision = revision
}

@_cdecl("chorus_state_content_hash")
public func chorus_state_content_hash(_ state: OpaquePointer?) -> UInt64 {
    guard let state else { return 0 }
    return borrowed(state, as: StateHandle.self).state.contentHash
}

@_cdecl("chorus_synchronize")
public func chorus_synchronize(_ comm: OpaquePointer?, _ state: OpaquePointer?, _ strategy: chorus_sync_strategy,
                               _ info: UnsafeMutablePointer<chorus_sync_info>?,
                               _ error: UnsafeMutablePointer<chorus_error>?) -> chorus_status {
    guarded(error) {
        let handle = try object(comm, "comm", as: CommHandle.self)
        let shared = try object(state, "state", as: StateHandle.self)
        guard let value = UInt8(exactly: strategy.rawValue), let strategy = SyncStrategy(rawValue: value) else {
            throw ArgumentError("unknown chorus_sync_strategy \(strategy.rawValue)")
        }
        let result = try handle.inOrder { try handle.communicator.synchronize(shared.state, strategy: strategy) }
        if let info {
            info.pointee = chorus_sync_info(revision: result.revision, was_outdated: result.wasOutdated ? 1 : 0,
                                            tensors_received: Int32(result.receivedTensors.count),
                                            bytes_received: UInt64(result.bytesReceived), sources: Int32(result.sources.count),
                                            lost_sources: Int32(result.lostSources.count), bytes_sent: UInt64(result.bytesSent))
        }
    }
}
