import Foundation
import Logging
import Metrics
import ParleyCore
import Synchronization

/// The sockets open on this node, by user, and the node's Bus subscriptions.
///
/// The first socket of a user subscribes the node to that user's events and the last one
/// unsubscribes. Subscription changes are issued one at a time, in the order the registry decided
/// them, so a quick disconnect/reconnect can never leave a connected user unsubscribed.
final class ConnectionRegistry: Sendable {
    private struct UserEntry {
        /// A user has a socket or a few: an array costs less per idle socket than a dictionary.
        var connections: [Connection]
        var subscribed: Promise<Void>
    }

    private enum SubscriptionChange: Sendable {
        case subscribe(UUID, Promise<Void>)
        case unsubscribe(UUID)
    }

    // Guarded by its Mutex.
    private let users = Mutex([UUID: UserEntry]())
    /// Sockets registered, kept beside `users` so that counting them costs nothing.
    private let total = Atomic<Int>(0)
    private let bus: any Bus
    private let logger: Logger
    private let changes: AsyncStream<SubscriptionChange>
    private let changesContinuation: AsyncStream<SubscriptionChange>.Continuation
    private let connectionsGauge = Gauge(label: "parley_ws_connections")
    private let framesOut = Counter(label: "parley_ws_frames_out_total")

    init(bus: any Bus, logger: Logger) {
        self.bus = bus
        self.logger = logger
        (changes, changesContinuation) = AsyncStream.makeStream(of: SubscriptionChange.self)
    }

    /// Applies subscription changes in order; runs for the life of the node.
    func run() async {
        for await change in changes {
            switch change {
            case .subscribe(let userID, let promise):
                do {
                    try await bus.subscribe(userID)
                    promise.resolve(.success(()))
                } catch {
                    logger.error("bus subscribe failed", metadata: ["parley.user_id": "\(userID.lowercased)", "parley.error": "\(error)"])
                    promise.resolve(.failure(error))
                }
            case .unsubscribe(let userID):
                do {
                    try await bus.unsubscribe(userID)
                } catch {
                    logger.warning("bus unsubscribe failed", metadata: ["parley.user_id": "\(userID.lowercased)", "parley.error": "\(error)"])
                }
            }
        }
    }

    func finish() {
        changesContinuation.finish()
    }

    /// Adds a connection and returns once the node receives the user's events.
    func add(_ connection: Connection) async throws {
        let subscribed: Promise<Void> = users.withLock { users in
            total.add(1, ordering: .relaxed)
            if var entry = users[connection.userID] {
                entry.connections.append(connection)
                users[connection.userID] = entry
                return entry.subscribed
            }
            let promise = Promise<Void>()
            users[connection.userID] = UserEntry(connections: [connection], subscribed: promise)
            changesContinuation.yield(.subscribe(connection.userID, promise))
            return promise
        }
        connectionsGauge.record(count)
        try await subscribed.value
    }

    func remove(_ connection: Connection) {
        users.withLock { users in
            guard var entry = users[connection.userID], let index = entry.connections.firstIndex(where: { $0 === connection }) else { return }
            entry.connections.remove(at: index)
            total.subtract(1, ordering: .relaxed)
            if entry.connections.isEmpty {
                users.removeValue(forKey: connection.userID)
                changesContinuation.yield(.unsubscribe(connection.userID))
            } else {
                users[connection.userID] = entry
            }
        }
        connectionsGauge.record(count)
    }

    var count: Int { total.load(ordering: .relaxed) }

    var all: [Connection] { users.withLock { $0.values.flatMap(\.connections) } }

    /// Hands a bus delivery to the sockets of its recipients on this node.
    func deliver(_ delivery: BusDelivery) {
        let targets: [Connection] = users.withLock { users in
            delivery.recipients.flatMap { users[$0]?.connections ?? [] }
        }
        guard !targets.isEmpty else { return }
        if case .sessionRevoked(let sessionID) = delivery.event {
            for connection in targets where connection.sessionID == sessionID {
                connection.close(code: CloseCode.sessionRevoked, reason: "session revoked")
            }
            return
        }
        if ServerFrame.isViewerSpecific(delivery.event) {
            for connection in targets {
                if let frame = ServerFrame.render(delivery.event, for: connection.userID) { connection.enqueue(frame) }
            }
        } else if let frame = ServerFrame.render(delivery.event, for: targets[0].userID) {
            for connection in targets { connection.enqueue(frame) }
        }
        framesOut.increment(by: targets.count)
    }
}
