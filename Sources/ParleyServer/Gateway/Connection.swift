import DequeModule
import Foundation
import NIOCore
import NIOWebSocket
import ParleyCore
import Synchronization

/// Close codes Parley uses besides the standard ones.
enum CloseCode {
    /// The socket's outbound queue overflowed: the client reads too slowly and should reconnect and sync.
    static let slowConsumer: UInt16 = 4008
    /// The session behind the socket was revoked (logout or refresh-token reuse).
    static let sessionRevoked: UInt16 = 4001
    /// RFC 6455 normal closure.
    static let normal: UInt16 = 1000
    /// RFC 6455 "going away": the node is shutting down.
    static let goingAway: UInt16 = 1001
    /// RFC 6455 invalid payload data (a text frame that is not UTF-8).
    static let invalidPayload: UInt16 = 1007
    /// RFC 6455 policy violation: no or bad authentication, or frames far over the rate limit.
    static let policyViolation: UInt16 = 1008
    /// RFC 6455 message too big.
    static let messageTooBig: UInt16 = 1009
    /// RFC 6455 "try again later": a dependency of the node (Redis, the database) is down.
    static let tryAgainLater: UInt16 = 1013
}

/// One authenticated WebSocket, as the rest of the node sees it: its identity and a bounded queue
/// of frames to write.
///
/// Producers (bus deliveries, acks, the socket's own replies) `enqueue` from any thread without
/// waiting; frames are encoded once and the same bytes are shared by every socket they go to. The
/// queue drains on the channel's event loop, as fast as the channel stays writable, one flush per
/// drain. A client that stops reading fills the queue; at `limit` frames the connection closes itself
/// (4008), so one slow reader never holds up the others or grows the node's memory.
final class Connection: Sendable {
    let id: UUID
    let userID: UUID
    let sessionID: UUID
    let channel: any Channel
    private let limit: Int

    private struct State {
        var frames = Deque<ByteBuffer>()
        /// Frames are held until the node receives the user's events (`start()`), so `hello` is
        /// never followed by a gap.
        var started = false
        /// A drain is scheduled on the event loop.
        var draining = false
        var closed = false
        /// Set by `close(code:reason:)`: sent after the frames queued before it.
        var closeRequest: (code: UInt16, reason: String)?
        /// A ping went out and its pong has not come back.
        var awaitingPong = false

        /// Whether the caller should schedule a drain (one at a time, once started).
        mutating func claimDrain() -> Bool {
            guard started, !draining, !frames.isEmpty || (closeRequest != nil && !closed) else { return false }
            draining = true
            return true
        }
    }

    // Guarded by its Mutex; channel I/O happens outside the lock, on the event loop.
    private let state = Mutex(State())

    init(id: UUID = UUID(), userID: UUID, sessionID: UUID, channel: any Channel, limit: Int) {
        self.id = id
        self.userID = userID
        self.sessionID = sessionID
        self.channel = channel
        self.limit = limit
    }

    /// Queues an encoded text frame; false if the connection is closed or just overflowed.
    @discardableResult
    func enqueue(_ frame: ByteBuffer) -> Bool {
        enum Outcome { case queued(drain: Bool), closed, overflow }
        let outcome: Outcome = state.withLock { state in
            if state.closed || state.closeRequest != nil { return .closed }
            guard state.frames.count < limit else {
                state.closed = true
                state.frames.removeAll()
                return .overflow
            }
            state.frames.append(frame)
            return .queued(drain: state.claimDrain())
        }
        switch outcome {
        case .queued(let drain):
            if drain { scheduleDrain() }
            return true
        case .closed:
            return false
        case .overflow:
            forceClose(code: CloseCode.slowConsumer, reason: "slow consumer: reconnect and sync")
            return false
        }
    }

    /// Starts writing: the user's events now reach this node.
    func start() {
        let drain = state.withLock { state in
            state.started = true
            return state.claimDrain()
        }
        if drain { scheduleDrain() }
    }

    /// Writes what the channel takes now. Called on the event loop; also when the channel becomes
    /// writable again.
    func drain() {
        channel.eventLoop.preconditionInEventLoop()
        var wrote = false
        while channel.isWritable {
            let (batch, close): ([ByteBuffer], (code: UInt16, reason: String)?) = state.withLock { state in
                let count = min(64, state.frames.count)
                let batch = Array(state.frames.prefix(count))
                if count == state.frames.count {
                    // Emptied: give the storage back rather than keep it for an idle socket.
                    state.frames = Deque()
                } else {
                    state.frames.removeFirst(count)
                }
                if state.frames.isEmpty, let request = state.closeRequest, !state.closed {
                    state.closed = true
                    return (batch, request)
                }
                return (batch, nil)
            }
            for frame in batch {
                channel.write(WebSocketFrame(fin: true, opcode: .text, data: frame), promise: nil)
            }
            wrote = wrote || !batch.isEmpty
            if let close {
                channel.writeAndFlush(Self.closeFrame(code: close.code, reason: close.reason, allocator: channel.allocator), promise: nil)
                closeSoon(after: .seconds(2))
                return
            }
            if batch.isEmpty { break }
        }
        if wrote { channel.flush() }
        let again = state.withLock { state in
            state.draining = false
            // Frames that arrived while draining, or were left for lack of room, go out on the next
            // drain (the writability change schedules one).
            return channel.isWritable ? state.claimDrain() : false
        }
        if again { scheduleDrain() }
    }

    /// The channel became writable again: write what waited. On the event loop.
    func writable() {
        if state.withLock({ $0.claimDrain() }) { drain() }
    }

    private func scheduleDrain() {
        channel.eventLoop.execute { self.drain() }
    }

    /// Closes cleanly: frames already queued are still written, then a close frame with `code`.
    /// If the peer does not complete the close within two seconds of the close frame, the channel is
    /// closed anyway; a peer that does not read at all (so the close frame never goes out) is cut off
    /// after five.
    func close(code: UInt16, reason: String) {
        let (requested, drain) = state.withLock { state -> (Bool, Bool) in
            guard !state.closed, state.closeRequest == nil else { return (false, false) }
            state.closeRequest = (code, reason)
            state.started = true
            return (true, state.claimDrain())
        }
        if drain { scheduleDrain() }
        if requested { closeSoon(after: .seconds(5)) }
    }

    /// Stops accepting frames; frames not yet written are dropped. The channel is already closing.
    func shutdown() {
        state.withLock { state in
            state.closed = true
            state.frames.removeAll()
        }
    }

    /// Closes the socket now, even if the peer is not reading: a close frame is written straight to
    /// the channel (it reaches a peer that is merely slow) and the channel is closed shortly after.
    func forceClose(code: UInt16, reason: String) {
        shutdown()
        let channel = self.channel
        channel.writeAndFlush(Self.closeFrame(code: code, reason: reason, allocator: channel.allocator)).whenComplete { _ in
            channel.close(promise: nil)
        }
        closeSoon(after: .milliseconds(500))
    }

    private func closeSoon(after delay: TimeAmount) {
        let channel = self.channel
        channel.eventLoop.scheduleTask(in: delay) { channel.close(promise: nil) }
    }

    // MARK: Heartbeat

    /// Called once per heartbeat period: a peer that did not answer the previous ping is closed;
    /// otherwise it is pinged.
    func heartbeat() {
        let alive = state.withLock { state in
            if state.closed { return true }
            defer { state.awaitingPong = true }
            return !state.awaitingPong
        }
        let channel = self.channel
        if alive {
            channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .ping, data: channel.allocator.buffer(capacity: 0)), promise: nil)
        } else {
            shutdown()
            channel.close(promise: nil)
        }
    }

    /// The peer answered a ping.
    func ponged() {
        state.withLock { $0.awaitingPong = false }
    }

    static func closeFrame(code: UInt16, reason: String, allocator: ByteBufferAllocator) -> WebSocketFrame {
        var data = allocator.buffer(capacity: 2 + reason.utf8.count)
        data.writeInteger(code)
        data.writeString(reason)
        return WebSocketFrame(fin: true, opcode: .connectionClose, data: data)
    }
}
