// libFuzzer target: every control-message decoder must accept or reject any bytes without crashing
// or allocating from a claimed length, and a message it accepts must encode back to the same bytes.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMessages(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let message = try? PeerToMaster(decoding: bytes) { precondition(message.encoded() == bytes) }
    if let message = try? MasterToPeer(decoding: bytes) { precondition(message.encoded() == bytes) }
    if let message = try? PeerToPeer(decoding: bytes) { precondition(message.encoded() == bytes) }
    if let message = try? Handshake(decoding: bytes) { precondition(message.encoded() == bytes) }
    return 0
}
