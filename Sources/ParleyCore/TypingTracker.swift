import Foundation
import Synchronization

/// Who is typing where, with throttling and expiry.
///
/// Clients send `start` every few seconds while the user types. The first `start` is relayed;
/// repeats within `throttle` are not. An indicator not refreshed within `ttl` expires, and
/// `expire(now:)` returns it so a `stop` can be relayed for a client that went quiet.
public final class TypingTracker: Sendable {
    private struct Key: Hashable {
        var conversationID: UUID
        var userID: UUID
    }

    private struct Entry {
        var lastRelayed: Date
        var expiresAt: Date
    }

    // Guarded by its Mutex.
    private let entries = Mutex([Key: Entry]())
    public let throttle: TimeInterval
    public let ttl: TimeInterval

    public init(throttle: TimeInterval = 3, ttl: TimeInterval = 6) {
        self.throttle = throttle
        self.ttl = ttl
    }

    /// Records a `start`; true if it should be relayed.
    public func start(conversationID: UUID, userID: UUID, now: Date) -> Bool {
        entries.withLock { entries in
            let key = Key(conversationID: conversationID, userID: userID)
            if var entry = entries[key], now.timeIntervalSince(entry.lastRelayed) < throttle {
                entry.expiresAt = now + ttl
                entries[key] = entry
                return false
            }
            entries[key] = Entry(lastRelayed: now, expiresAt: now + ttl)
            return true
        }
    }

    /// Records a `stop`; true if the user was typing (so the stop should be relayed).
    public func stop(conversationID: UUID, userID: UUID) -> Bool {
        entries.withLock { $0.removeValue(forKey: Key(conversationID: conversationID, userID: userID)) != nil }
    }

    /// Forgets an indicator without relaying anything (the user sent the message).
    public func clear(conversationID: UUID, userID: UUID) {
        _ = entries.withLock { $0.removeValue(forKey: Key(conversationID: conversationID, userID: userID)) }
    }

    /// Removes and returns indicators that were not refreshed in time.
    public func expire(now: Date) -> [(conversationID: UUID, userID: UUID)] {
        entries.withLock { entries in
            let expired = entries.filter { $0.value.expiresAt <= now }.map(\.key)
            for key in expired { entries.removeValue(forKey: key) }
            return expired.map { ($0.conversationID, $0.userID) }
        }
    }
}
