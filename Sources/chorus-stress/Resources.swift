#if canImport(Glibc)
import Glibc
#endif

/// Descriptors, threads and resident memory of this process, from /proc.
struct Resources: CustomStringConvertible {
    let descriptors: Int
    let threads: Int
    let residentKiB: Int

    static func current() -> Resources {
        var descriptors = 0
        if let dir = opendir("/proc/self/fd") {
            while readdir(dir) != nil { descriptors += 1 }
            closedir(dir)
            descriptors -= 3 // ".", ".." and the descriptor of the listing itself
        }
        var threads = 0, resident = 0
        if let file = fopen("/proc/self/status", "r") {
            var line = [CChar](repeating: 0, count: 256)
            while fgets(&line, 256, file) != nil {
                let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                let value = Int(text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).dropFirst().first ?? "") ?? 0
                if text.hasPrefix("Threads:") { threads = value }
                if text.hasPrefix("VmRSS:") { resident = value }
            }
            fclose(file)
        }
        return Resources(descriptors: descriptors, threads: threads, residentKiB: resident)
    }

    var description: String { "\(descriptors) fds, \(threads) threads, \(residentKiB / 1024) MiB resident" }
}
