#!/usr/bin/env bash
# Fuzzes the wire decoders with libFuzzer (clang and swiftc ship it): the C frame header decoder and the
# Swift control-message and handshake codecs, with AddressSanitizer. Usage: Tests/Fuzz/run.sh [SECONDS_EACH] (60).
# Prints each target's executions and whether it found a crash; exits non-zero if one did.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
seconds=${1:-60}
out=${TMPDIR:-/tmp}/chorus-fuzz
mkdir -p "$out/frame-corpus" "$out/messages-corpus"
clang -g -O1 -fsanitize=fuzzer,address -I"$root/CModules/CChorusTransport/include" \
    "$root/Tests/Fuzz/fuzz_frame_decode.c" "$root/CModules/CChorusTransport/wire/frame.c" -o "$out/fuzz-frame"
# The codecs without the handshake's proofs (HandshakeProofs.swift needs swift-crypto, which a bare
# swiftc does not see) and without the peer's state machine (which holds those proofs).
swiftc -sanitize=fuzzer,address -parse-as-library -O -module-name ChorusProtocol \
    $(find "$root/Sources/ChorusProtocol" -name '*.swift' ! -name HandshakeProofs.swift ! -path '*/Peer/*') \
    "$root/Tests/Fuzz/FuzzMessages.swift" \
    -o "$out/fuzz-messages"
status=0
for target in frame messages; do
    log="$out/$target.log"
    if "$out/fuzz-$target" -max_total_time="$seconds" -max_len=4096 -artifact_prefix="$out/$target-" \
        "$out/$target-corpus" > "$log" 2>&1; then result="no crash"; else result="CRASH (log below)"; status=1; cat "$log"; fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
    [ -n "$execs" ] || execs=$(grep -oE '#[0-9]+' "$log" | tail -1 | tr -d '#')
    echo "fuzz $target: $execs executions in ${seconds}s, $result"
done
exit $status
