#!/usr/bin/env python3
"""Proves the test suite fails when the code is wrong: applies deliberate bugs one at a time to a
scratch copy of the repository (a git worktree of HEAD), builds, runs the suites that should catch
each one, and reports which tests went red. A mutation no test catches is a hole in the suite.

    Tests/Mutation/mutate.py                 # every mutation; prints a Markdown table
    Tests/Mutation/mutate.py NAME [NAME...]  # some of them
    Tests/Mutation/mutate.py --list

Each mutation names the file, the exact text it replaces (which must occur exactly once, so a
mutation that no longer applies says so instead of passing silently), and the test filter to run.
The work tree lives in $MUTATION_DIR (default /tmp/chorus-mutants) and keeps its build between runs.
"""
import os
import re
import subprocess
import sys
import time

MUTATIONS = [
    dict(name="pair-failure-aborts-at-once",
         what="a pair member's failure aborts the operation at once, though the other may have committed it",
         file="Sources/ChorusProtocol/Master/MasterStateMachine.swift",
         find="        guard pairEpoch, ring.count == 2, descriptor.commitsAmongMembers, syncInTransfer == nil,",
         replace="        guard !pairEpoch, ring.count == 2, descriptor.commitsAmongMembers, syncInTransfer == nil,",
         filter="MasterStateMachineTests|aPairCutOneWay"),
    dict(name="pair-commit-keeps-the-failed-member",
         what="the other member's commit decides a success but the member that failed it stays",
         file="Sources/ChorusProtocol/Master/MasterStateMachine.swift",
         find="        if let evicted { actions += evict(evicted.connection, failed: opID, evicted.reason) }",
         replace="        _ = evicted",
         filter="MasterStateMachineTests|aPairCutOneWay"),
    dict(name="pair-one-fence-answer-aborts",
         what="in a pair one member's answer that it never vouched aborts, though the other may commit",
         file="Sources/ChorusProtocol/Master/MasterStateMachine.swift",
         find="            guard noMemberCanCommit() else { return [] }",
         replace="            guard noMemberCanCommit() || true else { return [] }",
         filter="MasterStateMachineTests"),
    dict(name="pair-success-after-local-failure",
         what="a member that failed an operation takes its partner's success as its own",
         file="Sources/Chorus/Operations/CommunicatorCore.swift",
         find="        if verdict == .success, let failure = operation.failedHere {",
         replace="        if verdict == .success, false, let failure = operation.failedHere {",
         filter="aPairCutOneWay"),
    dict(name="skip-input-restore",
         what="an aborted in-place collective leaves its buffer half-reduced",
         file="Sources/Chorus/Operations/CommunicatorCore.swift",
         find="        guard bytes > 0 else { return nil }\n        return Self.copyAside(",
         replace="        guard bytes < 0 else { return nil }\n        return Self.copyAside(",
         filter="RestoreOnAbortTests|killedPeerMidOperation"),
    dict(name="accept-stale-epoch-report",
         what="the master takes a report of an old epoch as one of the current epoch",
         file="Sources/ChorusProtocol/Master/MasterStateMachine.swift",
         find="        guard messageEpoch == epoch else {",
         replace="        guard messageEpoch == epoch || true else {",
         filter="MasterStateMachineTests|StateElectionTests"),
    dict(name="accept-old-epoch-hello",
         what="a member keeps a link whose hello names an epoch that is over",
         file="Sources/ChorusProtocol/Peer/PeerStateMachine.swift",
         find="where to == peerID && helloEpoch >= topology.epoch:",
         replace="where to == peerID:",
         filter="ProtocolEdgeTests|PeerStateMachineTests"),
    dict(name="drop-link-idle-timeout",
         what="a silent connection is never declared dead",
         file="CModules/CChorusTransport/core/connections.c",
         find="} else if (unanswered || (idle > 0 && (paused ? paused_sender_silent(c, idle) : now > c->last_recv_ms + idle))) {",
         replace="} else if (unanswered || (idle > 0 && 0)) {",
         filter="aSilentPeerFailsWithIdleTimeout|aSilentNeighbourIsCaught|stoppedPeerIsEvicted|aConnectionPausedOnAnEarlyFrame"),
    dict(name="accept-any-proof",
         what="the accepting side of the handshake takes any proof as the secret",
         file="Sources/ChorusProtocol/Handshake/HandshakeProofs.swift",
         find="            guard secret.verify(proof, .connector, connectorNonce: theirs, acceptorNonce: nonce) else {",
         replace="            guard true || secret.verify(proof, .connector, connectorNonce: theirs, acceptorNonce: nonce) else {",
         filter="HandshakeTests|AuthenticationTests"),
    dict(name="reports-speak-for-others",
         what="the master takes a member's report in another member's name",
         file="Sources/ChorusProtocol/Master/MasterStateMachine.swift",
         find="        guard reporter == sender else {",
         replace="        guard true || reporter == sender else {",
         filter="aMemberCannotReport|aMemberReportingForAnother"),
    dict(name="no-unidentified-bound",
         what="connections that never identify themselves are not bounded in number",
         file="CModules/CChorusTransport/core/connections.c",
         find="    if (e->config.max_unadmitted == 0) return;",
         replace="    return;",
         filter="floodsOfUnidentified|membersWorkAndTheMasterStaysBounded"),
    dict(name="never-evict-for-a-partition",
         what="the master re-forms a ring whose members cannot reach each other forever",
         file="Sources/ChorusProtocol/Master/MasterStateMachine.swift",
         find="            guard !partitioned.isEmpty else { return actions }",
         replace="            guard partitioned.isEmpty && false else { return actions }",
         filter="aPairThatCannotConnect|theMemberNamedInMost|aCutLinkBetween"),
    dict(name="a-dial-means-evicted",
         what="a peer whose master went silent takes a kernel-accepted dial as its eviction",
         file="Sources/ChorusProtocol/Peer/PeerStateMachine+Recovery.swift",
         find="        current.rejoined = false\n        current.lastFailure = why",
         replace="        current.rejoined = false\n        evicted = true\n        current.lastFailure = why",
         filter="aPausedMasterIsReported"),
    dict(name="drop-handshake-deadline",
         what="a connection that never identifies itself (a stranger's parked data frame) is kept",
         file="CModules/CChorusTransport/core/connections.c",
         find="if (!admitted && handshake > 0 && now > c->created_ms + handshake) {",
         replace="if (0 && !admitted && handshake > 0 && now > c->created_ms + handshake) {",
         filter="aConnectionNotAdmittedIsClosed|aStrangersDataFrameIsClosed"),
    dict(name="tick-skips-unread-frames",
         what="the I/O thread judges idle deadlines without reading what arrived while nobody waited",
         file="CModules/CChorusTransport/core/progress.c",
         find="    engine_progress(e, 0); // what arrived while nobody served it counts before the deadlines\n",
         replace="",
         filter="anOwnerThatDoesNotWait"),
    dict(name="no-background-progress",
         what="requests in flight move only when their owner waits",
         file="CModules/CChorusTransport/core/progress.c",
         find="        int background = __atomic_load_n(&e->pollers, __ATOMIC_SEQ_CST) == 0 &&",
         replace="        int background = 0 && __atomic_load_n(&e->pollers, __ATOMIC_SEQ_CST) == 0 &&",
         filter="requestsInFlightProgress"),
    dict(name="flip-one-verdict",
         what="one member takes the third operation's success as an abort",
         file="Sources/ChorusProtocol/Peer/PeerStateMachine.swift",
         find="            verdicts[opID] = outcome\n",
         replace="            verdicts[opID] = (peerID == 2 && opID == 3 && outcome == .success) ? .aborted(.staleEpoch) : outcome\n",
         filter="theRetryHelperCarriesALoop|stressRunPasses|aGracefulLeave"),
    dict(name="reduce-in-another-order-on-rank-1",
         what="rank 1 folds its own input before the incoming partial sum",
         file="Sources/ChorusAlgorithms/RingCollective.swift",
         find="""                    Reduction.combine(op, dataType, out: target,
                                      scratchSlot(s) + (seg.lowerBound - chunkStart) * elementSize,
                                      input + seg.lowerBound * elementSize, count: seg.count)""",
         replace="""                    if links.rank == 1 {
                        Reduction.combine(op, dataType, out: target, input + seg.lowerBound * elementSize,
                                          scratchSlot(s) + (seg.lowerBound - chunkStart) * elementSize, count: seg.count)
                    } else {
                    Reduction.combine(op, dataType, out: target,
                                      scratchSlot(s) + (seg.lowerBound - chunkStart) * elementSize,
                                      input + seg.lowerBound * elementSize, count: seg.count)
                    }""",
         filter="AllReduceMatrixTests|CollectivesTests|InProcessAlgorithmTests"),
    dict(name="skip-hash-check-after-transfer",
         what="a receiver keeps whatever bytes a state transfer delivered",
         file="Sources/Chorus/Operations/CommunicatorCore+SharedState.swift",
         find="in tensors where tensor.hash != electedHash {",
         replace="in tensors where tensor.hash != electedHash && false {",
         filter="SharedStateTests"),
    dict(name="let-mismatched-calls-through",
         what="the master does not compare the members' calls as they arrive",
         file="Sources/ChorusProtocol/Master/MasterStateMachine.swift",
         find="        guard arrivals.values.contains(where: { $0 != descriptor }) else { return nil }",
         replace="        guard arrivals.values.contains(where: { $0 != descriptor }) && false else { return nil }",
         filter="MismatchTests|MasterStateMachineTests|StateElectionTests"),
    dict(name="quantized-sum-reversed",
         what="the quantized all-reduce sums the contributions from the last rank down (the same on every member, but not the documented order)",
         file="Sources/ChorusAlgorithms/QuantizedAllReduce.swift",
         find="format.decode(scratch + rank * encodedBytes,",
         replace="format.decode(scratch + (n - 1 - rank) * encodedBytes,",
         filter="QuantizedAllReduceTests"),
    dict(name="quantized-feedback-not-restored",
         what="an aborted quantized all-reduce keeps the error feedback it had already advanced",
         file="Sources/Chorus/Operations/CommunicatorCore.swift",
         find="            restoreFeedback?()\n",
         replace="",
         filter="MismatchTests"),
    dict(name="quantize-truncates",
         what="quantizing truncates toward zero instead of rounding to nearest (PCCL's habit)",
         file="CModules/CChorusKernels/quantize.c",
         find="{ return (int32_t)((v + 12582912.0f) - 12582912.0f); }",
         replace="{ return (int32_t)v; }",
         filter="QuantizationTests|QuantizedAllReduceTests"),
    dict(name="skip-begin-message",
         what="members start moving data without telling the master what they called",
         file="Sources/Chorus/Operations/OperationLinks.swift",
         find="        guard let message = owedBegin else { return }",
         replace="        guard let message = owedBegin, false else { return }",
         filter="MismatchTests"),
    dict(name="grace-waits-before-looking",
         what="a survivor whose link failed waits out the grace before looking at the verdict that already came",
         file="Sources/Chorus/Operations/OperationLinks.swift",
         find="        // The verdict usually came in with the failure itself, so it is looked at before waiting.\n",
         replace="        _ = session.wait(until: graceEnd) { () -> Bool? in nil }\n",
         filter="ProcessFaultTests/aCrashIsRecovered"),
    dict(name="no-hang-suspicion",
         what="a silent connection is judged by the peer timeout alone",
         file="CModules/CChorusTransport/core/connections.c",
         find="    uint64_t suspicion = (uint64_t)c->rhythm_ms * e->config.suspicion_multiple;",
         replace="    return allowed;\n    uint64_t suspicion = (uint64_t)c->rhythm_ms * e->config.suspicion_multiple;",
         filter="hangSuspicionFollows|aHungPeerIsEvicted"),
    dict(name="suspicion-ignores-the-rhythm",
         what="hang suspicion keeps the starting rhythm instead of learning the sender's",
         file="CModules/CChorusTransport/core/stream.c",
         find="    if (silence_ms * 2 < e->config.heartbeat_interval_ms) return;",
         replace="    if (silence_ms * 2 < e->config.heartbeat_interval_ms || 1) return;",
         filter="hangSuspicionFollows|aSlowButAlive"),
    dict(name="no-safe-point-probes",
         what="the master probes nobody at a safe point",
         file="Sources/ChorusProtocol/Master/MasterStateMachine.swift",
         find="        return brokenReason != nil || away.count < ring.count ? away : []",
         replace="        return brokenReason != nil && away.isEmpty ? away : []",
         filter="aHungPeerIsDroppedInTheReforming|aSafePointIsHeldUp"),
    dict(name="failure-loses-its-call",
         what="a connection failed by a system call does not say which call",
         file="CModules/CChorusTransport/core/connections.c",
         find=".sys_errno = why.sys_errno, .sys_call = why.call};",
         replace=".sys_errno = why.sys_errno, .sys_call = NULL};",
         filter="aPeersResetOrCloseNamesTheCallThatFoundIt"),
    dict(name="shm-doorbell-never-rings",
         what="a shared-memory writer never wakes a reader that waits on an empty ring",
         file="CModules/CChorusTransport/shm/shm_path.c",
         find="        if (__atomic_exchange_n(&out->reader_waiting, 0, __ATOMIC_SEQ_CST)) wake = 1;",
         replace="        if (0) wake = 1;",
         filter="SharedMemoryPathTests"),
    dict(name="shm-offer-never-taken",
         what="an acceptor on the same host never maps the offered segment (everything stays on TCP)",
         file="CModules/CChorusTransport/shm/shm_path.c",
         find="        int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);",
         replace="        int fd = -1;",
         filter="bothRingsCarryFramesOfEveryShape|aMemberThatCannotSeeTheOthersSharedMemory"),
    dict(name="probes-go-unanswered",
         what="an engine ignores the probes it receives",
         file="CModules/CChorusTransport/core/stream.c",
         find="    if (!admitted) return chorus_no_failure();",
         replace="    if (admitted || !admitted) return chorus_no_failure();",
         filter="aProbeFails"),
    dict(name="no-readoption",
         what="a restarted master refuses the members of the group that lost its master",
         file="Sources/ChorusProtocol/Master/MasterStateMachine.swift",
         find="        guard adoption != nil || fresh else {",
         replace="        guard adoption != nil else {",
         filter="aMasterKilled|aRestartedMasterReadopts"),
    dict(name="rejoin-forgets-unanswered",
         what="a peer that reached a master again does not send what the old one never answered",
         file="Sources/ChorusProtocol/Peer/PeerStateMachine+Recovery.swift",
         find="+ unanswered.map { .sendToMaster(connection, $0) }",
         replace="+ unanswered.filter { _ in false }.map { .sendToMaster(connection, $0) }",
         filter="aMasterKilledDuringOperations|aMasterKilledDuringATopologyUpdate|PeerStateMachineTests"),
    dict(name="missed-verdict-not-resent",
         what="a member that rejoins is not sent the verdict it missed",
         file="Sources/ChorusProtocol/Master/MasterStateMachine.swift",
         find="        guard rejoin.lastDecidedOp < lastDecidedOp else { return [] }",
         replace="        guard rejoin.lastDecidedOp < 0 else { return [] }",
         filter="aMemberThatRejoinsKeepsItsPlace|aRestartedMasterReadopts"),
    dict(name="stall-not-forgiven",
         what="a master that was paused counts its members' closed connections as losses",
         file="Sources/Chorus/Master/StallForgiveness.swift",
         find="        guard let until = forgivingUntil, ContinuousClock.now < until else { return false }",
         replace="        guard let until = forgivingUntil, ContinuousClock.now < until, false else { return false }",
         filter="aMasterPausedWithinTheWindow"),
    dict(name="silent-members-waited-for",
         what="a restarted master waits out its window for a member the returning ones found silent",
         file="Sources/ChorusProtocol/Master/MasterStateMachine.swift",
         find="            adoption!.silent.insert(Adoption.SilentMember(epoch: silentEpoch, peer: silent))",
         replace="            _ = silent",
         filter="aMemberStoppedWhenTheMasterDies|aMemberFoundSilent"),
    dict(name="timeout-names-no-ranks",
         what="a timeout verdict does not say which ranks never called",
         file="Sources/ChorusProtocol/Master/MasterStateMachine.swift",
         find="            return abort(opID: opID, .timedOut(reporter: reporter, notArrived: ranksNotArrived()))",
         replace="            return abort(opID: opID, .timedOut(reporter: reporter, notArrived: []))",
         filter="MismatchTests|MasterStateMachineTests"),
    dict(name="baseline-kernel-drops-last-element",
         what="the x86-64 baseline build of the kernels skips the last element",
         file="CModules/CChorusKernels/reduce.c",
         find="    return baseline_reduce(dtype, op, out, a, b, count);",
         replace="    return baseline_reduce(dtype, op, out, a, b, count > 0 ? count - 1 : 0);",
         filter="KernelTests"),
    dict(name="avg-divides-by-n-minus-1",
         what="an average divides by one member too few",
         file="Sources/ChorusAlgorithms/RingCollective.swift",
         find="                        if op == .avg { Reduction.divide(dataType, target, count: seg.count, by: n) }",
         replace="                        if op == .avg { Reduction.divide(dataType, target, count: seg.count, by: max(1, n - 1)) }",
         filter="AllReduceMatrixTests|CollectivesTests|InProcessAlgorithmTests"),
    dict(name="launcher-leaves-siblings-running",
         what="a failed child does not stop its siblings",
         file="Sources/ChorusLauncher/LocalGroup.swift",
         find="        for member in members where member.child.waitForExit(timeoutMilliseconds: 0) == nil {\n            member.child.signal(SIGKILL)",
         replace="        for member in members where member.child.waitForExit(timeoutMilliseconds: 0) == nil && false {\n            member.child.signal(SIGKILL)",
         filter="LauncherTests"),
    dict(name="retry-helper-gives-up-at-once",
         what="withRetry throws the first retryable error instead of re-forming",
         file="Sources/Chorus/API/Communicator+Retry.swift",
         find="            } catch let error as ChorusError where error.isRetryable && attempt < policy.maxAttempts {\n                retryLogger?.notice(\"attempt \\(attempt) of \\(policy.maxAttempts) failed (\\(error)); re-forming the group\")\n                reform = true\n                attempt += 1\n            }\n        }\n    }\n\n    /// Async form",
         replace="            } catch let error as ChorusError where error.isRetryable && attempt < 1 {\n                retryLogger?.notice(\"attempt \\(attempt) of \\(policy.maxAttempts) failed (\\(error)); re-forming the group\")\n                reform = true\n                attempt += 1\n            }\n        }\n    }\n\n    /// Async form",
         filter="theRetryHelperCarriesALoop|dilocoTrains"),
    dict(name="formation-ignores-early-hellos",
         what="a peer whose neighbours said hello before it adopted the topology never sees its ring connect",
         file="Sources/ChorusProtocol/Peer/PeerStateMachine+Formation.swift",
         find="        return [first] + evaluateFormation()",
         replace="        return [first]",
         filter="PeerStateMachineTests"),
    dict(name="formation-waits-out-an-abort",
         what="a peer forming an epoch the master already aborted waits out the connect timeout",
         file="Sources/ChorusProtocol/Peer/PeerStateMachine+Formation.swift",
         find="            if case .aborted(let reason)? = verdicts[1] {",
         replace="            if case .aborted(let reason)? = verdicts[1], false {",
         filter="PeerStateMachineTests"),
    dict(name="transfer-forgets-a-lost-sources-chunks",
         what="a receiver that loses a source does not ask the others for that source's open chunks",
         file="Sources/ChorusAlgorithms/StateTransfer.swift",
         find="                queue.append(head.chunk)\n                loseSource(head.source)",
         replace="                loseSource(head.source)",
         filter="StateTransferTests"),
    dict(name="full-mesh-again",
         what="an epoch links every pair of members again (O(n) links per member)",
         file="Sources/ChorusProtocol/Peer/EpochLinks.swift",
         find="            distance *= 2\n",
         replace="            distance += 1\n",
         filter="SparseLinksTests|anEpochOpensTheRingAndTheMembersAPowerOfTwoAway"),
    dict(name="source-refuses-on-demand-links",
         what="a member closes a mesh link dialed outside the pattern instead of adopting it",
         file="Sources/ChorusProtocol/Peer/PeerStateMachine+OnDemandLinks.swift",
         find="              links?.mesh[rank] == nil else { return [.close(connection)] }",
         replace="              links?.mesh[rank] == nil, false else { return [.close(connection)] }",
         filter="SparseLinksTests|outdatedPeersReceiveTheMajorityVersion"),
    dict(name="one-peer-group-for-all",
         what="the master puts every peer in group 0 whatever its register names",
         file="Sources/Chorus/Master/PeerGroups.swift",
         find="        case .register(_, let peerGroup): peerGroup",
         replace="        case .register(_, _): 0",
         filter="PeerGroupTests"),
    dict(name="master-ignores-the-proposed-order",
         what="the master re-forms in the current order whatever the members proposed",
         file="Sources/ChorusProtocol/Master/MasterStateMachine.swift",
         find="        guard proposals.count == 1, let proposal = proposals.first else { return current }",
         replace="        guard proposals.count == 1 && false, let proposal = proposals.first else { return current }",
         filter="theProposedRingOrderIsTaken|onUnequalLinksTheNewRingLeavesOutTheSlowPairs"),
    dict(name="ring-order-by-sum-alone",
         what="the ring order minimizes the sum of its links' costs, not its slowest link",
         file="Sources/ChorusAlgorithms/RingOrder.swift",
         find="        bottleneck != other.bottleneck ? bottleneck < other.bottleneck : total < other.total",
         replace="        total < other.total",
         filter="RingOrderTests"),
    dict(name="skip-a-pair-one-end-knows",
         what="a pair skips its measurement when only one of its ends knows the link",
         file="Sources/ChorusAlgorithms/LinkMeasurement.swift",
         find="            if try swap(mine, 0).0 == 1 && mine == 1 { continue }",
         replace="            if try swap(mine, 0).0 == 1 || mine == 1 { continue }",
         filter="RingOrderTests"),
    dict(name="both-ends-dial-a-measured-pair",
         what="both members of a pair outside the pattern dial its link for the measurement",
         file="Sources/Chorus/Operations/OperationLinks.swift",
         find="            return try meshLink(to: peer, dialing: rank < peer)",
         replace="            return try meshLink(to: peer, dialing: true)",
         filter="TopologyOptimizationTests"),
    dict(name="lanes-from-own-setting",
         what="a link's receiving end expects its own lane setting instead of the count its neighbour dials",
         file="Sources/ChorusProtocol/Peer/PeerStateMachine+Formation.swift",
         find="                leftLaneCount = count\n",
         replace="                leftLaneCount = max(1, settings.lanes)\n",
         filter="PeerStateMachineTests|neighboursThatDialDifferentNumbersOfLanes"),
    dict(name="decide-held-messages-out-of-order",
         what="the master reads a message about a later operation at once instead of holding it until the earlier ones are decided",
         file="Sources/ChorusProtocol/Master/MasterStateMachine.swift",
         find="              opID > lastDecidedOp + 1, opID - lastDecidedOp <= Self.operationWindow else { return false }",
         replace="              opID > lastDecidedOp + 1, opID - lastDecidedOp <= Self.operationWindow, false else { return false }",
         filter="MasterStateMachineTests|InFlightTests"),
    dict(name="later-operations-do-not-share-the-abort",
         what="a member does not take an earlier operation's abort as the verdict of the later ones in flight",
         file="Sources/ChorusProtocol/Peer/PeerStateMachine.swift",
         find="        if let broken = firstAbort, broken.opID < opID { return .aborted(broken.reason) }",
         replace="        if let broken = firstAbort, broken.opID < opID, false { return .aborted(broken.reason) }",
         filter="PeerStateMachineTests|InFlightTests"),
    dict(name="in-flight-input-not-restored",
         what="an aborted all-reduce in flight leaves its in-place buffer as the aborted data phase left it",
         file="Sources/Chorus/Operations/CommunicatorCore+InFlight.swift",
         find="    func restore() { buffer.copyMemory(from: saved, byteCount: bytes) }",
         replace="    func restore() {}",
         filter="InFlightTests"),
    dict(name="commit-whatever-the-calls",
         what="members commit a collective among themselves though their calls differ",
         file="Sources/Chorus/Operations/CommitAmongMembers.swift",
         find="            guard token[2] == ~token[3] else { return false }",
         replace="            guard token[2] == ~token[3] || true else { return false }",
         filter="MismatchTests"),
    dict(name="vouch-through-a-fence",
         what="a member vouches for an operation the master fenced",
         file="CModules/CChorusTransport/core/fence.c",
         find="    return c->fence_op != 0 && c->fence_epoch == epoch && op >= c->fence_op;",
         replace="    return 0 && c->fence_op != 0 && c->fence_epoch == epoch && op >= c->fence_op;",
         filter="aFenceAndAVouch"),
    dict(name="abort-at-a-loss",
         what="the master aborts at a member's loss, though the member may have vouched and the others committed",
         file="Sources/ChorusProtocol/Master/MasterStateMachine.swift",
         find="            if lostInEpoch == nil { lostInEpoch = peer.id }\n            actions += decideIfAllReported(opID: lastDecidedOp + 1)",
         replace="            if lostInEpoch == nil { lostInEpoch = peer.id }\n            actions += abort(opID: lastDecidedOp + 1, .peerLost(peer.id))",
         filter="MasterStateMachineTests"),
    dict(name="committed-report-never-sent",
         what="a member never reports a collective it committed among the members",
         file="Sources/Chorus/Operations/CommunicatorCore.swift",
         find="                try session.sendToMaster(report, later: committed)",
         replace="                if !committed { try session.sendToMaster(report) }",
         filter="aLongRunOfCollectivesKeepsTheMastersVerdictsComing"),
    dict(name="next-header-read-ahead-lost",
         what="the bytes of the next frame's header read with a payload are dropped",
         file="CModules/CChorusTransport/core/stream.c",
         find="        c->header_got = next_header_got;",
         replace="        c->header_got = 0;",
         filter="framesArriveIntactHoweverTheStreamIsSplit"),
    dict(name="committed-range-stopped-short-untold",
         what="a committed range stopped by an abort never tells the members the successes before it",
         file="Sources/ChorusProtocol/Master/MasterStateMachine.swift",
         find="        if let untold { actions = verdicts(opID: untold, .success) + actions }",
         replace="        _ = untold",
         filter="MasterStateMachineTests"),
]


def run(command, cwd, timeout):
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        return done.returncode, done.stdout + done.stderr, time.monotonic() - started
    except subprocess.TimeoutExpired as expired:
        out = (expired.stdout or b"").decode(errors="replace") if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        return 124, out, time.monotonic() - started


def main():
    args = sys.argv[1:]
    if args == ["--list"]:
        for m in MUTATIONS:
            print(f"{m['name']}: {m['what']} ({m['file']})")
        return 0
    chosen = [m for m in MUTATIONS if not args or m["name"] in args]
    unknown = set(args) - {m["name"] for m in MUTATIONS}
    if unknown:
        print(f"unknown mutations: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True).stdout.strip()
    work = os.environ.get("MUTATION_DIR", "/tmp/chorus-mutants")
    if not os.path.isdir(work):
        subprocess.run(["git", "-C", root, "worktree", "add", "--detach", work, "HEAD"], check=True, capture_output=True)
    subprocess.run(["git", "-C", work, "checkout", "--detach", "--force",
                    subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()],
                   check=True, capture_output=True)
    code, out, _ = run(["swift", "build", "--build-tests"], work, 1800)
    if code != 0:
        print(out[-3000:], file=sys.stderr)
        print("the unmutated tree does not build", file=sys.stderr)
        return 1
    rows, survivors = [], 0
    for m in chosen:
        path = os.path.join(work, m["file"])
        text = open(path).read()
        if text.count(m["find"]) != 1:
            rows.append((m, "DID NOT APPLY", f"the text occurs {text.count(m['find'])} times", 0))
            survivors += 1
            continue
        open(path, "w").write(text.replace(m["find"], m["replace"]))
        try:
            code, out, _ = run(["swift", "build", "--build-tests"], work, 1800)
            if code != 0:
                rows.append((m, "BUILD FAILED", out[-300:].replace("\n", " "), 0))
                survivors += 1
                continue
            code, out, seconds = run(["swift", "test", "--skip-build", "--filter", m["filter"]], work, 900)
            red = sorted(set(re.findall(r"✘ Test (\S+?)(?:\(| recorded| failed)", out)))
            if code == 124:
                verdict = "red (timed out)"
            elif code != 0:
                verdict = "red"
            else:
                verdict = "SURVIVED"
                survivors += 1
            rows.append((m, verdict, ", ".join(red) if red else ("-" if code == 0 else "(see output)"), seconds))
        finally:
            open(path, "w").write(text)
        print(f"{m['name']}: {rows[-1][1]} ({rows[-1][3]:.0f} s)", file=sys.stderr, flush=True)
    print("| mutation | what it breaks | suites run | result | tests that went red |")
    print("|---|---|---|---|---|")
    for m, verdict, detail, seconds in rows:
        print(f"| `{m['name']}` | {m['what']} (`{m['file']}`) | `{m['filter']}` | {verdict} | {detail} |")
    print(f"\n{len(rows) - survivors} of {len(rows)} mutations caught.")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
