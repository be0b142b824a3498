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
    /// RFC 6455 policy violation: no or bad authentication, or frames far over the rate limit.
    static let policyViolation: UInt16 = 1008
    /// RFC 6455 "try again later": a dependency of the node (Redis, the database) is down.
    static let tryAgainLater: UInt16 = 1013
}

/// One authenticated WebSocket: its identity and a bounded queue of frames to write.
///
/// Producers (bus deliveries, the socket's own replies) `enqueue` without waiting. The socket's
/// writer task takes frames in batches with `nextBatch(max:)`. When the queue is full the client is not keeping up:
/// the connection closes itself, so that one slow reader never holds up the others.
final class Connection: Sendable {
    let id: UUID
    let userID: UUID
    let sessionID: UUID
    private let channel: any Channel
    private let limit: Int

    private struct State {
        var frames = Deque<String>()
        var waiter: CheckedContinuation<[String]?, Never>?
        var closed = false
        /// Set by `close(code:reason:)`: the writer sends this close frame after the queued frames.
        var closeRequest: (code: UInt16, reason: String)?
    }

    // Guarded by its Mutex; the waiter is resumed outside the lock.
    private let state = Mutex(State())

    init(id: UUID = UUID(), userID: UUID, sessionID: UUID, channel: any Channel, limit: Int) {
        self.id = id
        self.userID = userID
        self.sessionID = sessionID
        self.channel = channel
        self.limit = limit
    }

    /// Queues a text frame; false if the connection is closed or just overflowed.
    @discardableResult
    func enqueue(_ text: String) -> Bool {
        enum Outcome { case queued, handedOver(CheckedContinuation<[String]?, Never>), closed, overflow }
        let outcome: Outcome = state.withLock { state in
            if state.closed { return .closed }
            if let waiter = state.waiter {
                state.waiter = nil
                return .handedOver(waiter)
            }
            guard state.frames.count < limit else {
                state.closed = true
                state.frames.removeAll()
                return .overflow
            }
            state.frames.append(text)
            return .queued
        }
        switch outcome {
        case .queued: return true
        case .handedOver(let waiter):
            waiter.resume(returning: [text])
            return true
        case .closed: return false
        case .overflow:
            forceClose(code: CloseCode.slowConsumer, reason: "slow consumer: reconnect and sync")
            return false
        }
    }

    /// The frames queued so far (at least one, at most `max`), waiting for one if none is; nil once
    /// the connection is closed (after a clean close, only once the frames queued before it are
    /// taken). Taking frames in batches lets the writer flush once per batch, not once per frame.
    func nextBatch(max: Int) async -> [String]? {
        await withCheckedContinuation { continuation in
            let ready: [String]?? = state.withLock { state in
                if !state.frames.isEmpty {
                    let count = min(max, state.frames.count)
                    let batch = Array(state.frames.prefix(count))
                    state.frames.removeFirst(count)
                    return .some(batch)
                }
                if state.closed { return .some(nil) }
                state.waiter = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    /// The close the writer should perform once the queue is drained, if one was requested.
    var requestedClose: (code: UInt16, reason: String)? { state.withLock { $0.closeRequest } }

    /// Closes cleanly: frames already queued are still written, then the writer sends a close frame
    /// with `code`. If the writer cannot get there within two seconds the channel is closed anyway.
    func close(code: UInt16, reason: String) {
        let waiter: CheckedContinuation<[String]?, Never>? = state.withLock { state in
            guard !state.closed else { return nil }
            state.closed = true
            state.closeRequest = (code, reason)
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: nil)
        let channel = self.channel
        channel.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
    }

    /// Stops accepting frames and wakes the writer; frames already queued are dropped.
    func shutdown() {
        let waiter: CheckedContinuation<[String]?, Never>? = state.withLock { state in
            state.closed = true
            state.frames.removeAll()
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: nil)
    }

    /// Closes the socket now, even if the peer is not reading: a close frame is written straight to
    /// the channel (it reaches a peer that is merely slow) and the channel is closed shortly after.
    func forceClose(code: UInt16, reason: String) {
        shutdown()
        var data = channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        data.writeInteger(code)
        data.writeString(reason)
        let frame = WebSocketFrame(fin: true, opcode: .connectionClose, data: data)
        let channel = self.channel
        channel.writeAndFlush(frame).whenComplete { _ in
            channel.close(promise: nil)
        }
        channel.eventLoop.scheduleTask(in: .milliseconds(500)) { channel.close(promise: nil) }
    }
}
