import Chorus
#if canImport(Glibc)
import Glibc
#endif

/// The per-peer log the checker reads: one line per operation attempt or event, `key=value` fields.
///   op peer=P epoch=E op=K participants=1,2,3 outcome=ok|abort:REASON|fatal:REASON hash=H start=US end=US
///   event kind=kill|stop|cont|leave|join slot=S t=US        (written by the driver)
///   event kind=admitted|reformed|left peer=P [epoch=E] t=US  (written by the peer)
struct StressLog {
    private let file: UnsafeMutablePointer<FILE>

    init(path: String) throws {
        guard let file = fopen(path, "a") else { throw CheckerError("cannot open \(path)") }
        self.file = file
    }

    func write(_ line: String) {
        fputs(line + "\n", file)
        fflush(file)
    }

    func close() { fclose(file) }
}

/// The input of peer `peer` in operation (epoch, op): small integers, so any sum of up to a few
/// thousand of them is exact in f32 and the expected output is independent of reduction order.
func stressInput(peer: PeerID, epoch: UInt64, op: UInt64, count: Int) -> [Float] {
    let base = Int(truncatingIfNeeded: peer &* 31 &+ epoch &* 7 &+ op &* 3)
    return (0 ..< count).map { Float((base + $0) % 17) }
}

/// FNV-1a over the output's bytes.
func stressHash(_ values: [Float]) -> UInt64 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    values.withUnsafeBytes { for byte in $0 { h = (h ^ UInt64(byte)) &* 0x100_0000_01B3 } }
    return h
}

/// Reason text without spaces, for a log field.
func compact(_ text: String) -> String { String(text.map { $0 == " " ? "_" : $0 }) }
