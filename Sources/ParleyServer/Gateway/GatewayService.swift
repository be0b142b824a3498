import Foundation
import Logging
import ParleyCore
import ServiceLifecycle

/// The gateway's background work, as one service of the node: applying Bus subscription changes,
/// expiring typing indicators, and refreshing presence for open sockets.
struct GatewayService: Service {
    let registry: ConnectionRegistry
    let chat: ChatService
    let presence: PresenceService
    let interval: Duration
    /// Presence entries are renewed this often (well inside the registry's TTL).
    var presenceHeartbeat: Duration = .seconds(10)
    let logger: Logger

    func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask { await registry.run() }
            group.addTask {
                await cancelWhenGracefulShutdown {
                    var lastHeartbeat = ContinuousClock.now
                    // A timer, not a poll: each tick does the periodic work; shutdown cancels the sleep.
                    while (try? await Task.sleep(for: interval)) != nil {
                        do {
                            try await chat.expireTyping(now: Date())
                        } catch {
                            logger.warning("typing expiry failed", metadata: ["parley.error": "\(error)"])
                        }
                        if ContinuousClock.now - lastHeartbeat >= presenceHeartbeat {
                            lastHeartbeat = ContinuousClock.now
                            await heartbeat()
                        }
                    }
                }
                registry.finish()
            }
        }
    }

    /// Renews every open socket's presence entry in one call (one round trip with Redis), then
    /// announces users whose entries lapsed elsewhere (a node that died) as offline.
    private func heartbeat() async {
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
