import Foundation
import NIOCore
import NIOWebSocket
import Synchronization

/// Counters every connection bumps, for the once-a-second progress line.
final class Progress: Sendable {
    let sent = Atomic<Int>(0)
    let acked = Atomic<Int>(0)
    let delivered = Atomic<Int>(0)
    let errors = Atomic<Int>(0)
    let connected = Atomic<Int>(0)
    let pongs = Atomic<Int>(0)
}

/// What one connection does: who it is, where it sends, and at which rate.
struct ConnectionPlan: Sendable {
    var index: Int
    /// How many connections share the send schedule (their start offsets are spread over the interval).
    var connections: Int
    var conversationID: String
    /// Seconds between two sends of this connection; nil for a connection that only listens.
    var interval: Double?
    var padding: Int
    /// Unique per run, so that a second run's clientMsgIds are not replays of the first's (which
    /// Parley would rightly answer with the original message and not deliver again).
    var runID: String
}

/// Timing of the whole run, in uptime nanoseconds.
struct RunClock: Sendable {
    var start: UInt64
    var measureFrom: UInt64
    var stopSending: UInt64

    func second(_ now: UInt64) -> Int { now > start ? Int((now - start) / 1_000_000_000) : 0 }
}

/// The run's clock, fixed once every connection is up.
final class ClockBox: Sendable {
    private let clock = Mutex(RunClock(start: 0, measureFrom: 0, stopSending: 0))
    var value: RunClock { clock.withLock { $0 } }
    func set(_ value: RunClock) { clock.withLock { $0 = value } }
}

@inline(__always) func uptimeNanos() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

/// The client side of one WebSocket: sends on an open-loop schedule (latency is measured from the
/// scheduled time, so a stalled server cannot hide its stalls) and checks every frame it receives.
final class BenchConnection: ChannelInboundHandler, @unchecked Sendable {
    // All state is confined to the channel's event loop.
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    let plan: ConnectionPlan
    let stats: LoopStats
    let progress: Progress
    private let clockBox: ClockBox
    /// Copied from `clockBox` when sending starts.
    private var clock = RunClock(start: 0, measureFrom: 0, stopSending: 0)
    let ready: EventLoopPromise<Void>
    private var schedule: OpenLoopSchedule?
    private var lastSeq: Int64 = 0
    private var pongs = 0
    private var seenSeqs: [UInt64] = []
    private let padding: String

    init(plan: ConnectionPlan, stats: LoopStats, progress: Progress, clock: ClockBox, ready: EventLoopPromise<Void>) {
        self.plan = plan
        self.stats = stats
        self.progress = progress
        self.clockBox = clock
        self.ready = ready
        self.padding = String(repeating: "x", count: max(0, plan.padding))
    }

    private var context: ChannelHandlerContext?
    /// `probe()` ran before the handler was in the pipeline: send the ping once it is.
    private var probeWanted = false

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if probeWanted {
            probeWanted = false
            probe()
        }
    }

    /// Asks the server for a pong; the connection counts as ready when it comes. (Waiting for
    /// `hello` alone is not enough: when it shares a TCP segment with the 101 response, the client's
    /// upgrade can hand it on before this handler is in the pipeline.) Call on the event loop once
    /// the upgrade has completed.
    func probe() {
        guard let context else {
            probeWanted = true
            return
        }
        var buffer = context.channel.allocator.buffer(capacity: 16)
        buffer.writeString(#"{"type":"ping"}"#)
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: buffer)), promise: nil)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Starts sending; must run on the channel's event loop.
    func start() {
        clock = clockBox.value
        if let context { startSending(context: context) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text:
            frame.unmaskedData.withUnsafeReadableBytes { handle(FrameScan(bytes: $0)) }
        case .ping:
            let pong = WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.unmaskedData)
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case .connectionClose:
            context.close(promise: nil)
        default:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        schedule?.cancel()
        ready.fail(ChannelError.ioOnClosedChannel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    /// Starts the send schedule (called on the event loop once every connection is ready).
    private func startSending(context: ChannelHandlerContext) {
        guard let interval = plan.interval else { return }
        let intervalNanos = UInt64(interval * 1e9)
        // Spread connections over the interval so that they do not all fire together.
        let offset = OpenLoopSchedule.offset(index: plan.index, of: plan.connections, intervalNanos: intervalNanos)
        let schedule = OpenLoopSchedule(firstAt: clock.start + offset, intervalNanos: intervalNanos, stopAt: clock.stopSending)
        self.schedule = schedule
        schedule.run(on: context.eventLoop) { [weak self] k, scheduled in
            self?.send(k, scheduled: scheduled)
        } flush: { [weak self] in
            self?.context?.flush()
        }
    }

    private func send(_ k: Int, scheduled: UInt64) {
        guard let context else { return }
        let text =
            #"{"type":"send","conversationId":"\#(plan.conversationID)","clientMsgId":"\#(plan.runID)-\#(plan.index)-\#(k)","body":"\#(plan.index)|\#(k)|\#(scheduled)|\#(padding)"}"#
        var buffer = context.channel.allocator.buffer(capacity: text.utf8.count)
        buffer.writeString(text)
        context.write(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: buffer)), promise: nil)
        stats.recordSent(second: clock.second(scheduled))
        progress.sent.add(1, ordering: .relaxed)
    }

    /// Reads a frame in place, on its bytes: at tens of thousands of frames a second, a String per
    /// frame and Foundation's substring search made the client, not the server, the bottleneck.
    private func handle(_ frame: FrameScan) {
        guard let type = frame.string(after: FrameScan.type) else { return }
        if type.elementsEqual(FrameScan.message) {
            onMessage(frame)
        } else if type.elementsEqual(FrameScan.ack) {
            onAck(frame)
        } else if type.elementsEqual(FrameScan.pong) {
            pongs += 1
            progress.pongs.add(1, ordering: .relaxed)
            if pongs == 1 { ready.succeed(()) }
        } else if type.elementsEqual(FrameScan.error) {
            stats.errors += 1
            progress.errors.add(1, ordering: .relaxed)
        }
    }

    private func onAck(_ frame: FrameScan) {
        let now = uptimeNanos()
        // clientMsgId is "<run>-<index>-<k>": k is after the last dash.
        guard let id = frame.string(after: FrameScan.clientMsgID), let dash = id.lastIndex(of: UInt8(ascii: "-")),
            let k = FrameScan.integer(id[(dash + 1)...]), let interval = plan.interval
        else { return }
        let intervalNanos = UInt64(interval * 1e9)
        let scheduled =
            clock.start + OpenLoopSchedule.offset(index: plan.index, of: plan.connections, intervalNanos: intervalNanos) + UInt64(k) * intervalNanos
        stats.acked += 1
        progress.acked.add(1, ordering: .relaxed)
        if scheduled >= clock.measureFrom, now > scheduled {
            _ = stats.ackLatency.record(max(1, (now - scheduled) / 1000))
        }
    }

    private func onMessage(_ frame: FrameScan) {
        let now = uptimeNanos()
        // The body is "<sender index>|<k>|<scheduled ns>|<padding>".
        guard let body = frame.string(after: FrameScan.body) else { return }
        let parts = body.split(separator: UInt8(ascii: "|"), maxSplits: 3, omittingEmptySubsequences: false)
        guard parts.count >= 3, let sender = FrameScan.integer(parts[0]), let scheduled = FrameScan.integer(parts[2]).map(UInt64.init)
        else { return }
        // Our own messages come back to us too (we are a member); they are not deliveries.
        guard sender != plan.index else { return }
        if let seq = frame.integer(after: FrameScan.seq) {
            let index = Int(seq)
            let word = index / 64
            while seenSeqs.count <= word { seenSeqs.append(0) }
            let bit: UInt64 = 1 << UInt64(index % 64)
            if seenSeqs[word] & bit != 0 {
                stats.duplicates += 1
                return
            }
            seenSeqs[word] |= bit
            if seq < lastSeq { stats.outOfOrder += 1 }
            lastSeq = max(lastSeq, seq)
        }
        progress.delivered.add(1, ordering: .relaxed)
        stats.record(
            endToEndMicros: now > scheduled ? (now - scheduled) / 1000 : 0,
            second: clock.second(now),
            measured: scheduled >= clock.measureFrom
        )
    }
}

/// A frame's JSON bytes, searched in place for the few keys the client needs (the values it reads
/// never contain quotes or escapes).
struct FrameScan {
    static let type = Array(#""type":""#.utf8)
    static let clientMsgID = Array(#""clientMsgId":""#.utf8)
    static let body = Array(#""body":""#.utf8)
    static let seq = Array(#""seq":"#.utf8)
    static let message = Array("message".utf8)
    static let ack = Array("ack".utf8)
    static let pong = Array("pong".utf8)
    static let error = Array("error".utf8)

    let bytes: UnsafeRawBufferPointer

    /// Where the first occurrence of `key` ends (the index just after it).
    func end(of key: [UInt8]) -> Int? {
        guard let first = key.first, bytes.count >= key.count else { return nil }
        var start = 0
        let last = bytes.count - key.count
        while start <= last {
            if bytes[start] == first {
                var matched = 1
                while matched < key.count, bytes[start + matched] == key[matched] { matched += 1 }
                if matched == key.count { return start + key.count }
            }
            start += 1
        }
        return nil
    }

    /// The bytes of the string value after `key` (a key that ends with the opening quote).
    func string(after key: [UInt8]) -> [UInt8]? {
        guard let start = end(of: key) else { return nil }
        var index = start
        while index < bytes.count, bytes[index] != UInt8(ascii: "\"") { index += 1 }
        guard index < bytes.count else { return nil }
        return Array(bytes[start..<index])
    }

    /// The integer after `key` (a key that ends with the colon).
    func integer(after key: [UInt8]) -> Int64? {
        guard let start = end(of: key) else { return nil }
        var index = start
        while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) { index += 1 }
        return Self.integer(Array(bytes[start..<index])[...])
    }

    /// Decimal digits as a number; nil if empty, not all digits, or too long.
    static func integer(_ digits: ArraySlice<UInt8>) -> Int64? {
        guard !digits.isEmpty, digits.count <= 18 else { return nil }
        var value: Int64 = 0
        for digit in digits {
            guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(digit) else { return nil }
            value = value * 10 + Int64(digit - UInt8(ascii: "0"))
        }
        return value
    }
}
