import CChorus
import Chorus

// MARK: - Master

@_cdecl("chorus_master_create")
public func chorus_master_create(_ host: UnsafePointer<CChar>?, _ port: UInt16, _ out: UnsafeMutablePointer<OpaquePointer?>?,
                                 _ error: UnsafeMutablePointer<chorus_error>?) -> chorus_status {
    guarded(error) {
        guard let out else { throw ArgumentError("out is NULL") }
        let configuration = try Configuration.fromEnvironment()
        let master = try Master(host: host.map { String(cString: $0) } ?? "127.0.0.1", port: port, configuration: configuration)
        out.pointee = retained(MasterHandle(master))
    }
}

@_cdecl("chorus_master_port")
public func chorus_master_port(_ master: OpaquePointer?) -> UInt16 {
    guard let master else { return 0 }
    return borrowed(master, as: MasterHandle.self).master.port
}

@_cdecl("chorus_master_destroy")
public func chorus_master_destroy(_ master: OpaquePointer?) {
    guard let master else { return }
    borrowed(master, as: MasterHandle.self).master.shutdown()
    release(master, as: MasterHandle.self)
}

// MARK: - Communicator

@_cdecl("chorus_comm_create")
public func chorus_comm_create(_ master: UnsafePointer<CChar>?, _ options: UnsafePointer<UnsafePointer<CChar>?>?,
                               _ out: UnsafeMutablePointer<OpaquePointer?>?,
                               _ error: UnsafeMutablePointer<chorus_error>?) -> chorus_status {
    guarded(error) {
        guard let out else { throw ArgumentError("out is NULL") }
        var environment = Configuration.currentEnvironment()
        var index = 0
        while let option = options?[index] {
            let text = String(cString: option)
            guard let equals = text.firstIndex(of: "="), text.hasPrefix("CHORUS_") else {
                throw ArgumentError("option '\(text)' is not CHORUS_NAME=value")
            }
            environment[String(text[..<equals])] = String(text[text.index(after: equals)...])
            index += 1
        }
        let configuration = try Configuration.fromEnvironment(environment)
        let address = master.map { String(cString: $0) } ?? environment["CHORUS_MASTER"]
        out.pointee = retained(CommHandle(try Communicator(master: address, configuration: configuration)))
    }
}

@_cdecl("chorus_comm_destroy")
public func chorus_comm_destroy(_ comm: OpaquePointer?) {
    guard let comm else { return }
    // Queued calls start first; a request not yet waited for keeps the communicator until it is.
    borrowed(comm, as: CommHandle.self).drain()
    release(comm, as: CommHandle.self)
}

@_cdecl("chorus_comm_leave")
public func chorus_comm_leave(_ comm: OpaquePointer?, _ error: UnsafeMutablePointer<chorus_error>?) -> chorus_status {
    guarded(error) {
        let handle = try object(comm, "comm", as: CommHandle.self)
        try handle.inOrder { try handle.communicator.leave() }
    }
}

@_cdecl("chorus_update_topology")
public func chorus_update_topology(_ comm: OpaquePointer?, _ minimumWorldSize: Int32, _ admitPending: Int32,
                                   _ error: UnsafeMutablePointer<chorus_error>?) -> chorus_status {
    guarded(error) {
        let handle = try object(comm, "comm", as: CommHandle.self)
        try handle.inOrder {
            try handle.communicator.updateTopology(minimumWorldSize: Int(minimumWorldSize), admitting: admitPending != 0)
        }
    }
}

@_cdecl("chorus_optimize_topology")
public func chorus_optimize_topology(_ comm: OpaquePointer?, _ measureMilliseconds: Int32, _ remeasure: Int32,
                                     _ minimumWorldSize: Int32, _ admitPending: Int32,
                                     _ result: UnsafeMutablePointer<chorus_topology_optimization>?,
                                     _ error: UnsafeMutablePointer<chorus_error>?) -> chorus_status {
    guarded(error) {
        let handle = try object(comm, "comm", as: CommHandle.self)
        let optimization = try handle.inOrder {
            try handle.communicator.optimizeTopology(measuringFor: .milliseconds(Int64(measureMilliseconds)), remeasure: remeasure != 0,
                                                     minimumWorldSize: Int(minimumWorldSize), admitting: admitPending != 0)
        }
        result?.pointee = chorus_topology_optimization(reordered: optimization.reordered ? 1 : 0,
                                                       measured_pairs: Int32(clamping: optimization.measuredPairs),
                                                       right_lanes: Int32(clamping: optimization.rightLanes),
                                                       slowest_link_before: optimization.slowestLinkBefore,
                                                       slowest_link_after: optimization.slowestLinkAfter)
    }
}

@_cdecl("chorus_comm_poll")
public func chorus_comm_poll(_ comm: OpaquePointer?, _ error: UnsafeMutablePointer<chorus_error>?) -> chorus_status {
    guarded(error) {
        let handle = try object(comm, "comm", as: CommHandle.self)
        try handle.inOrder { try handle.communicator.pollMembership() }
    }
}

/// A getter's value, or `fallback` for a NULL handle.
private func read<T>(_ comm: OpaquePointer?, _ fallback: T, _ body: (Communicator) -> T) -> T {
    guard let comm else { return fallback }
    return body(borrowed(comm, as: CommHandle.self).communicator)
}

@_cdecl("chorus_comm_rank")
public func chorus_comm_rank(_ comm: OpaquePointer?) -> Int32 { read(comm, -1) { Int32($0.rank) } }

@_cdecl("chorus_comm_world_size")
public func chorus_comm_world_size(_ comm: OpaquePointer?) -> Int32 { read(comm, 0) { Int32($0.worldSize) } }

@_cdecl("chorus_comm_epoch")
public func chorus_comm_epoch(_ comm: OpaquePointer?) -> UInt64 { read(comm, 0) { $0.epoch } }

@_cdecl("chorus_comm_peer_id")
public func chorus_comm_peer_id(_ comm: OpaquePointer?) -> UInt64 { read(comm, 0) { $0.peerID } }

@_cdecl("chorus_comm_pending_joins")
public func chorus_comm_pending_joins(_ comm: OpaquePointer?) -> Int32 { read(comm, 0) { Int32($0.pendingPeerCount) } }

@_cdecl("chorus_comm_pending_leaves")
public func chorus_comm_pending_leaves(_ comm: OpaquePointer?) -> Int32 { read(comm, 0) { Int32($0.leavingPeerCount) } }
