import ChorusProtocol
import ChorusTransport
import Logging

/// Every knob of a communicator or master, with its default, in one place.
/// `Configuration.fromEnvironment()` applies the `CHORUS_*` overrides (EnvironmentOverrides.swift).
public struct Configuration: Sendable {
    /// Address this peer listens on for its ring neighbours. Loopback by default; never all
    /// interfaces unless set to "0.0.0.0" or "::" explicitly.
    public var bindHost = "127.0.0.1"
    /// Address neighbours should dial; defaults to `bindHost` (set it when binding a wildcard).
    public var advertisedHost: String?
    /// Ports this peer may listen on for its neighbours (the first free one is taken), so a firewall
    /// needs to open only these; nil takes an ephemeral port (32768-60999 on Linux).
    public var peerPorts: ClosedRange<UInt16>?
    /// A connection that has sent nothing for this long sends a heartbeat (a 32-byte frame, sent by
    /// the engine's own thread, so a busy program keeps sending them).
    public var heartbeatInterval: Duration = .milliseconds(100)
    /// A connection silent for this long (while we wait on it) is declared dead: this bounds how
    /// long a crashed or hung (SIGSTOP) peer or master can stall anyone.
    public var peerTimeout: Duration = .seconds(5)
    /// Hang suspicion: a connection silent for this many times the longest silence its sender
    /// usually keeps between frames (learned from its heartbeats; raised at once by a slow moment,
    /// lowered over a few seconds) is declared dead before `peerTimeout`, so a hung peer is evicted
    /// in well under a second while one slowed by other load, whose heartbeats come late, raises
    /// its own bar. A process that finds itself held up (its timer late) suspects nobody until the
    /// others have had time to be heard. 0: `peerTimeout` alone. `CHORUS_SUSPICION_MULTIPLE`.
    public var suspicionMultiple = 4
    /// The least silence that hang suspicion declares dead. `CHORUS_SUSPICION_MIN_MS`.
    public var suspicionMinimum: Duration = .milliseconds(500)
    /// Master: while the group meets at a safe point (to re-form after a fault, to admit a joiner, to
    /// let a member leave), a member the safe point has waited for 25 ms is probed, and evicted
    /// unless something arrives from it within this long (or its usual silence between
    /// heartbeats, if longer). A live member's engine answers within half a heartbeat interval even
    /// while its program computes; a hung one is dropped in the same re-forming instead of holding
    /// everyone for the suspicion window and causing a second one. 0: no probes.
    /// `CHORUS_PROBE_TIMEOUT_MS`.
    public var probeTimeout: Duration = .milliseconds(150)
    /// How long the master may be gone without ending the run. A peer whose master connection fails
    /// keeps its session (id, epoch, links, the operation in flight) and dials the master's address
    /// again until one answers (the same master, or a restarted one, which re-adopts the group) or
    /// this window passes (then `masterUnreachable`); it tries for at least a few seconds
    /// (`min(peerTimeout, 3 s)`) even at 0, so that a master that dropped it can say so (`evicted`).
    /// A restarted master waits this long, from the first member's return, for the others.
    /// `CHORUS_MASTER_WINDOW_MS`.
    public var masterWindow: Duration = .seconds(10)
    /// Deadline for establishing a TCP connection (master or neighbour).
    public var connectTimeout: Duration = .seconds(10)
    /// An accepted connection must identify itself (a registration at the master, a hello at a
    /// peer) within this long, or it is closed, whatever it sends meanwhile.
    public var handshakeTimeout: Duration = .seconds(5)
    /// The shared secret every member and the master hold (at least 16 bytes; 32 random bytes is
    /// right). Set, every connection, to the master and between peers, opens with a mutual
    /// challenge-response over it (HMAC-SHA256, `Handshake`), and a connection that cannot prove it
    /// is refused with `authenticationFailed`. Nil: anyone who can reach the master may join.
    /// `CHORUS_SECRET_FILE` (preferred: the secret stays out of the environment) or `CHORUS_SECRET`.
    public var secret: [UInt8]?
    /// Deadline for one collective, from start to verdict, as a backstop behind `peerTimeout`.
    public var operationTimeout: Duration = .seconds(120)
    /// How long `Communicator.init` and `updateTopology` wait for the master to form a topology.
    public var admissionTimeout: Duration = .seconds(600)
    /// Largest frame a ring step sends; smaller segments overlap reducing with sending sooner.
    public var segmentBytes = 1 << 20
    /// SO_SNDBUF/SO_RCVBUF for every socket (the kernel caps it at net.core.wmem_max/rmem_max);
    /// 0 leaves the kernel's auto-tuning on, which on loopback stalls mid-size messages for ~1 ms.
    public var socketBufferBytes = 4 << 20
    /// A wait polls (yielding the core each round) this long before it blocks: completions usually
    /// land within microseconds, and sleeping and waking costs more. 0 blocks at once.
    public var spinWait: Duration = .microseconds(200)
    /// `AllReduceAlgorithm.auto` uses recursive doubling up to this many bytes (with three or more
    /// peers) and the ring above. Every peer of a group must use the same value (it decides which
    /// connections carry the data). Measured crossover on 2 cores, 4 peers: between 256 KiB and 1 MiB.
    public var recursiveDoublingMaxBytes = 256 << 10
    /// `ScanAlgorithm.auto` uses the recursive-doubling scan up to this many bytes of state (with three
    /// or more peers), the chain above. Every peer must use the same value. 0: on this 2-core machine
    /// the chain won at every size measured (4 and 8 peers, 4 KiB-16 MiB), since doubling keeps every
    /// peer busy at once; raise it where each peer has its own cores.
    public var scanRecursiveDoublingMaxBytes = 0
    /// Parallel connections this peer dials to its right ring neighbour (its ring lanes); segments
    /// stripe across them, and the neighbour takes the number its hellos name. 0 (the default):
    /// automatic, one until `Communicator.optimizeTopology()` has measured the link, then as many as
    /// its bandwidth-delay product needs (see DESIGN.md, "Ring order by measured link speed").
    public var connectionsPerPeer = 0
    /// Collectives started with `Communicator.startAllReduce` that may wait for their verdicts at
    /// once; starting one more first waits for the oldest verdict. At most 64, the master's window.
    public var operationsInFlight = 8
    /// The peer group this communicator joins (PCCL's peer groups, `MPI_Comm_split`'s colour). One
    /// master keeps each group apart: its own members, epochs, collectives, safe points and shared
    /// state, so a fault or a re-forming in one group leaves the others running. A process that
    /// belongs to two groupings (a shard's group and a replica's) opens a communicator for each.
    public var peerGroup: UInt32 = 0
    /// What carries collective data between peers (the master always uses TCP). Every peer of a
    /// group must resolve to the same transport, except that `.tcp` and `.shm` mix (a TCP end
    /// refuses shared memory and the link stays on TCP).
    public var transport: TransportKind = .auto
    /// Largest control message accepted.
    public var maxControlBytes = 1 << 20
    /// Bytes of control messages being read or waiting to be handled, over every connection of this
    /// master or peer: a frame that would pass it closes its connection, so a flood of unfinished
    /// frames cannot take the memory the members need. (Before it has identified itself a connection
    /// may send only frames of up to 4 KiB.)
    public var maxBufferedControlBytes = 32 << 20
    /// Accepted connections that have not yet identified themselves (handshake, registration, hello);
    /// past it the oldest is closed, so a flood of half-open connections holds at most this many
    /// descriptors and a genuine peer, which identifies itself within a round trip, still gets in.
    public var maxUnidentifiedConnections = 256
    /// Shared-state transfer: an outdated peer asks its sources for pieces of this size (each one
    /// frame, received straight into the tensor)...
    public var syncChunkBytes = 4 << 20
    /// ...and keeps this many pieces in flight per source.
    public var syncChunksInFlight = 2
    /// A peer whose link was closed by its neighbour, or that received a frame of another shape, waits
    /// up to this long for the master's verdict before reporting the failure itself, so the verdict
    /// names the cause (a crash, a mismatched call). The verdict usually arrives with the failure (the
    /// master hears of a crash as soon as the neighbours do), and then nothing waits; raise it where
    /// the master is much farther away than the neighbours. `CHORUS_LINK_FAILURE_GRACE_MS`.
    public var linkFailureGrace: Duration = .milliseconds(200)
    /// Where this peer (or master) logs, through swift-log: the application's `LoggingSystem` backend
    /// (standard error unless it bootstrapped another). Every line carries the process id and, once
    /// known, the peer id, rank and epoch. Level `.warning` by default (aborts, lost links, a lost
    /// master); `.info` adds membership changes, `.debug` every operation. `CHORUS_LOG_LEVEL` sets it.
    public var logger: Logger = {
        var logger = Logger(label: "chorus")
        logger.logLevel = .warning
        return logger
    }()
    /// Requests from other members that may wait for this peer before the sender is cut off.
    var maxQueuedPeerMessages = 4096

    public init() {}

    /// Refuses settings that cannot work or would quietly switch a safeguard off (a peer timeout of
    /// 0 used to turn hang detection off). `Communicator` and `Master` check it when they start.
    /// - Throws: `invalidArgument` naming the setting, its environment variable and the value.
    public func validate() throws(ChorusError) {
        func positive(_ value: Duration, _ name: String, _ variable: String) throws(ChorusError) {
            guard value > .zero else { throw .invalidArgument("\(name) (\(variable)) is \(value), it must be positive") }
        }
        try positive(heartbeatInterval, "heartbeatInterval", "CHORUS_HEARTBEAT_MS")
        try positive(peerTimeout, "peerTimeout", "CHORUS_PEER_TIMEOUT_MS")
        guard heartbeatInterval < peerTimeout else {
            throw .invalidArgument("heartbeatInterval (CHORUS_HEARTBEAT_MS) is \(heartbeatInterval), not shorter than "
                                   + "peerTimeout (CHORUS_PEER_TIMEOUT_MS) \(peerTimeout): quiet healthy connections would be declared dead")
        }
        try positive(connectTimeout, "connectTimeout", "CHORUS_CONNECT_TIMEOUT_MS")
        try positive(handshakeTimeout, "handshakeTimeout", "CHORUS_HANDSHAKE_TIMEOUT_MS")
        try positive(operationTimeout, "operationTimeout", "CHORUS_OP_TIMEOUT_MS")
        try positive(admissionTimeout, "admissionTimeout", "CHORUS_ADMISSION_TIMEOUT_MS")
        guard suspicionMinimum >= .zero else {
            throw .invalidArgument("suspicionMinimum (CHORUS_SUSPICION_MIN_MS) is \(suspicionMinimum), it must not be negative")
        }
        guard probeTimeout >= .zero else {
            throw .invalidArgument("probeTimeout (CHORUS_PROBE_TIMEOUT_MS) is \(probeTimeout), it must not be negative")
        }
        guard masterWindow >= .zero else {
            throw .invalidArgument("masterWindow (CHORUS_MASTER_WINDOW_MS) is \(masterWindow), it must not be negative")
        }
        guard linkFailureGrace >= .zero else {
            throw .invalidArgument("linkFailureGrace (CHORUS_LINK_FAILURE_GRACE_MS) is \(linkFailureGrace), it must not be negative")
        }
        if let secret, secret.count < SharedSecret.minimumBytes {
            throw .invalidArgument("the secret (CHORUS_SECRET or CHORUS_SECRET_FILE) has \(secret.count) bytes; at least \(SharedSecret.minimumBytes) are needed (e.g. head -c 32 /dev/urandom | base64)")
        }
        guard spinWait >= .zero else { throw .invalidArgument("spinWait (CHORUS_SPIN_US) is \(spinWait), it must not be negative") }
        let counts: [(String, String, Int, ClosedRange<Int>)] = [
            ("segmentBytes", "CHORUS_SEGMENT_BYTES", segmentBytes, 1 ... Int(Int32.max)),
            ("socketBufferBytes", "CHORUS_SOCKET_BUFFER_BYTES", socketBufferBytes, 0 ... Int(Int32.max)),
            ("recursiveDoublingMaxBytes", "CHORUS_RD_MAX_BYTES", recursiveDoublingMaxBytes, 0 ... Int.max),
            ("scanRecursiveDoublingMaxBytes", "CHORUS_SCAN_RD_MAX_BYTES", scanRecursiveDoublingMaxBytes, 0 ... Int.max),
            ("connectionsPerPeer", "CHORUS_CONNECTIONS", connectionsPerPeer, 0 ... PeerStateMachine.maximumLanes),
            ("operationsInFlight", "CHORUS_OPERATIONS_IN_FLIGHT", operationsInFlight, 1 ... Int(MasterStateMachine<Int>.operationWindow)),
            ("suspicionMultiple", "CHORUS_SUSPICION_MULTIPLE", suspicionMultiple, 0 ... 1000),
            ("maxControlBytes", "maxControlBytes", maxControlBytes, 1024 ... Int(Int32.max)),
            ("maxBufferedControlBytes", "maxBufferedControlBytes", maxBufferedControlBytes, maxControlBytes ... Int.max),
            ("maxUnidentifiedConnections", "maxUnidentifiedConnections", maxUnidentifiedConnections, 1 ... 1 << 20),
            ("syncChunkBytes", "CHORUS_SYNC_CHUNK_BYTES", syncChunkBytes, 1 ... Int(UInt32.max)),
            ("syncChunksInFlight", "CHORUS_SYNC_CHUNKS_IN_FLIGHT", syncChunksInFlight, 1 ... 1024),
        ]
        for (name, variable, value, allowed) in counts where !allowed.contains(value) {
            throw .invalidArgument("\(name) (\(variable)) is \(value), outside \(allowed.lowerBound)...\(allowed.upperBound)")
        }
    }

    /// Where this peer's data frames travel.
    /// - Throws: `setupFailed` when `.rdma` was asked for and this machine cannot do RDMA.
    func dataPath() throws(ChorusError) -> TransportEngine.DataPath {
        switch transport {
        case .tcp:
            return .tcp
        case .rdma:
            if let why = TransportEngine.rdmaUnavailableReason { throw .setupFailed("transport rdma was asked for, but \(why)") }
            return .rdma
        case .shm:
            return .shm
        case .auto:
            // RDMA devices do not serve loopback addresses, so a loopback group stays off RDMA.
            return TransportEngine.rdmaUnavailableReason == nil && !isLoopback(bindHost) ? .rdma : .shm
        }
    }

    /// The key derived from `secret`, nil without one.
    var sharedSecret: SharedSecret? { secret.map(SharedSecret.init) }

    /// The engine's settings. `maxQueuedEvents` is the flood guard of one engine's event queue: a
    /// member's engine hears from its master and log2 n partners; the master's from every member,
    /// each up to `PeerStateMachine.maximumUndecided(worldSize:)` operations ahead (its bytes stay
    /// bounded by `maxBufferedControlBytes`).
    func transportSettings(forMaster: Bool = false) -> TransportSettings {
        TransportSettings(heartbeatInterval: heartbeatInterval, idleTimeout: peerTimeout,
                          maxControlBytes: maxControlBytes, maxQueuedEvents: forMaster ? 65_536 : 4096,
                          socketBufferBytes: socketBufferBytes, spinWait: spinWait, handshakeTimeout: handshakeTimeout,
                          maxUnadmitted: maxUnidentifiedConnections, maxBufferedControlBytes: maxBufferedControlBytes,
                          suspicionMultiple: suspicionMultiple, suspicionMinimum: suspicionMinimum)
    }
}

/// What carries collective data between peers.
public enum TransportKind: String, Sendable, CaseIterable {
    /// Framed TCP (the default everywhere RDMA is absent).
    case tcp
    /// Reliable-connected RDMA queue pairs set up with rdma_cm (RoCE or InfiniBand); control frames
    /// and heartbeats stay on a TCP connection beside each link. Fails with a clear error where no
    /// RDMA device exists.
    case rdma
    /// Shared memory between members on one host (rings in a segment each link's dialer offers and
    /// its acceptor maps), TCP between members on different hosts: chosen per link, automatically.
    case shm
    /// RDMA when this machine has a device and the bind address is not loopback, else `shm`.
    case auto
}

extension TransportKind {
    /// Nil when this machine can use RDMA; otherwise why not (no libraries, a kernel without RDMA,
    /// no device).
    public static var rdmaUnavailableReason: String? { TransportEngine.rdmaUnavailableReason }
}

private func isLoopback(_ host: String) -> Bool {
    host == "localhost" || host.hasPrefix("127.") || host == "::1"
}
