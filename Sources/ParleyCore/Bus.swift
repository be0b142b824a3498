import Foundation
import ServiceLifecycle
import Synchronization

/// Fan-out of events to users, across nodes.
///
/// A node subscribes to the users that have sockets on it and receives, through its handler, every
/// event published to them by any node. `publish` never waits for delivery: the durable state is
/// already committed, and a client that misses an event catches up with `sync`. Events published by
/// one node reach each subscriber in the order they were published.
///
/// Adapters: `InProcessBus` (one node) and `RedisBus` (cluster). Every adapter runs
/// `Tests/BusConformanceTests` unchanged.
///
/// A bus is a `Service`: `run()` holds its connections for the life of the node; on graceful
/// shutdown it sends what is still queued, then stops delivering.
public protocol Bus: Service {
    /// Sets the function that receives this node's deliveries and returns once the bus can take
    /// subscriptions (or throws `bus_unavailable`). Call once, while `run()` is running.
    func start(handler: @escaping @Sendable (BusDelivery) -> Void) async throws
    /// Publishes `event` to `recipients`; returns without waiting for delivery.
    func publish(_ event: ChatEvent, to recipients: [UUID])
    /// From now on, events for `userID` reach this node. Returns once the subscription is active.
    func subscribe(_ userID: UUID) async throws
    func unsubscribe(_ userID: UUID) async throws
}

/// The embedded bus: publish calls the handler synchronously for the subscribed recipients.
public final class InProcessBus: Bus {
    private struct State {
        var handler: (@Sendable (BusDelivery) -> Void)?
        var subscribed: Set<UUID> = []
    }

    // Guarded by the Mutex; the handler is called outside the lock.
    private let state = Mutex(State())

    public init() {}

    public func start(handler: @escaping @Sendable (BusDelivery) -> Void) async throws {
        state.withLock { $0.handler = handler }
    }

    public func publish(_ event: ChatEvent, to recipients: [UUID]) {
        let (handler, local): ((@Sendable (BusDelivery) -> Void)?, [UUID]) = state.withLock { state in
            (state.handler, recipients.filter { state.subscribed.contains($0) })
        }
        guard let handler, !local.isEmpty else { return }
        handler(BusDelivery(event: event, recipients: local))
    }

    public func subscribe(_ userID: UUID) async throws {
        _ = state.withLock { $0.subscribed.insert(userID) }
    }

    public func unsubscribe(_ userID: UUID) async throws {
        _ = state.withLock { $0.subscribed.remove(userID) }
    }

    /// Delivers until graceful shutdown (or cancellation).
    public func run() async throws {
        try? await gracefulShutdown()
        state.withLock { $0.handler = nil }
    }
}
