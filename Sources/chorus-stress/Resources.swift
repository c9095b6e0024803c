#if canImport(Glibc)
import Glibc
#endif

/// Descriptors, threads and resident memory of a process (this one by default), from /proc.
struct Resources: CustomStringConvertible {
    let descriptors: Int
    let threads: Int
    let residentKiB: Int

    static func current(pid: Int32? = nil) -> Resources {
        let root = pid.map { "/proc/\($0)" } ?? "/proc/self"
        var descriptors = 0
        if let dir = opendir(root + "/fd") {
            while readdir(dir) != nil { descriptors += 1 }
            closedir(dir)
            descriptors -= pid == nil ? 3 : 2 // ".", ".." (and, for ourselves, the listing's own descriptor)
        }
        var threads = 0, resident = 0
        if let file = fopen(root + "/status", "r") {
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
