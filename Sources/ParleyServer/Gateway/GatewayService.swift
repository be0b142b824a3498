import Foundation
import Logging
import ParleyCore
import ServiceLifecycle

/// The gateway's background work, as one service of the node: applying Bus subscription changes,
/// pinging sockets (one timer for the node, not one per socket), expiring typing indicators,
/// refreshing presence for open sockets, and, on shutdown, waiting for the sockets to close.
struct GatewayService: Service {
    let registry: ConnectionRegistry
    let sockets: OpenSockets
    let chat: ChatService
    let presence: PresenceService
    /// WebSocket ping period; a socket that misses a pong for a whole period is closed.
    let heartbeat: Duration
    /// How often expired typing indicators are swept.
    let interval: Duration
    /// Presence entries are renewed this often (well inside the registry's TTL).
    var presenceHeartbeat: Duration = .seconds(10)
    /// How long shutdown waits for sockets to finish their close handshake.
    var drainTimeout: Duration = .seconds(10)
    let logger: Logger

    func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask { await registry.run() }
            group.addTask {
                await cancelWhenGracefulShutdown { await maintain() }
                await drain()
                registry.finish()
            }
        }
    }

    /// A timer, not a poll: each tick does the periodic work that is due; shutdown cancels the sleep.
    private func maintain() async {
        let clock = ContinuousClock()
        var lastPing = clock.now
        var lastPresence = clock.now
        while (try? await Task.sleep(for: interval)) != nil {
            do {
                try await chat.expireTyping(now: Date())
            } catch {
                logger.warning("typing expiry failed", metadata: ["parley.error": "\(error)"])
            }
            if clock.now - lastPing >= heartbeat {
                lastPing = clock.now
                for connection in registry.all { connection.heartbeat() }
            }
            if clock.now - lastPresence >= presenceHeartbeat {
                lastPresence = clock.now
                await renewPresence()
            }
        }
    }

    /// The server has stopped accepting and told every socket to go away (each acknowledges its sends
    /// in flight, then closes with 1001). Waits for them; past the timeout, closes what is left.
    private func drain() async {
        let open = sockets.count
        guard open > 0 else { return }
        logger.info("waiting for sockets to close", metadata: ["parley.sockets": "\(open)"])
        let sockets = self.sockets
        let drained = (try? await withTimeout(drainTimeout) { await sockets.allClosed() }) != nil
        if !drained {
            logger.warning("sockets still open after the drain timeout; closing them", metadata: ["parley.sockets": "\(sockets.count)"])
            for connection in registry.all { connection.forceClose(code: CloseCode.goingAway, reason: "server shutting down") }
        }
    }

    /// Renews every open socket's presence entry in one call (one round trip with Redis), then
    /// announces users whose entries lapsed elsewhere (a node that died) as offline.
    private func renewPresence() async {
        let open = registry.all.map { PresenceConnection(userID: $0.userID, connectionID: $0.id) }
        if !open.isEmpty {
            do {
                try await presence.registry.heartbeat(open, now: Date())
            } catch {
                logger.warning("presence heartbeat failed", metadata: ["parley.error": "\(error)", "parley.connections": "\(open.count)"])
            }
        }
        do {
            try await presence.sweepLapsed()
        } catch {
            logger.warning("presence sweep failed", metadata: ["parley.error": "\(error)"])
        }
    }
}
