import Foundation
import Synchronization

/// Samples a local process's CPU use and resident memory once a second from /proc.
final class ProcessSampler: Sendable {
    let pid: Int32
    private let samples = Mutex<(cpu: [Double], rss: [Double])>(([], []))

    init(pid: Int32) {
        self.pid = pid
    }

    func run(until stop: @escaping @Sendable () -> Bool) async {
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let page = Double(sysconf(Int32(_SC_PAGESIZE)))
        var last = readCPU()
        var lastTime = Date()
        while !stop() {
            try? await Task.sleep(for: .seconds(1))
            let now = Date()
            if let cpu = readCPU(), let previous = last {
                let percent = (cpu - previous) / ticks / now.timeIntervalSince(lastTime) * 100
                let rss = readRSSPages().map { $0 * page / 1_048_576 } ?? 0
                samples.withLock {
                    $0.cpu.append(percent); $0.rss.append(rss)
                }
                last = cpu
            }
            lastTime = now
        }
    }

    var result: (cpu: [Double], rss: [Double]) { samples.withLock { $0 } }

    private func readCPU() -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command: state is field 3; utime and stime are fields 14 and 15.
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return user + system
    }

    /// The process's CPU time so far (user + system), in seconds.
    static func cpuSeconds(pid: Int32) -> Double? {
        ProcessSampler(pid: pid).readCPU().map { $0 / Double(sysconf(Int32(_SC_CLK_TCK))) }
    }

    /// The process's resident memory now, in MB.
    static func rssMB(pid: Int32) -> Double? {
        ProcessSampler(pid: pid).readRSSPages().map { $0 * Double(sysconf(Int32(_SC_PAGESIZE))) / 1_048_576 }
    }

    private func readRSSPages() -> Double? {
        guard let statm = try? String(contentsOfFile: "/proc/\(pid)/statm", encoding: .utf8) else { return nil }
        let fields = statm.split(separator: " ")
        return fields.count > 1 ? Double(fields[1]) : nil
    }
}
