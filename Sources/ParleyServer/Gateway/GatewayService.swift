import Foundation
import ParleyCore
import ServiceLifecycle

/// The gateway's background work, as one service of the node: applying Bus subscription changes,
/// expiring typing indicators, and refreshing presence for open sockets.
struct GatewayService: Service {
    let registry: ConnectionRegistry
    let chat: ChatService
    let presence: PresenceService
    let bus: any Bus
    let interval: Duration

    func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask { await registry.run() }
            group.addTask {
                await cancelWhenGracefulShutdown {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: interval)
                        await maintain()
                    }
                }
                registry.finish()
            }
        }
        await bus.shutdown()
    }

    private func maintain() async {
        let now = Date()
        await chat.expireTyping(now: now)
        for connection in registry.all {
            try? await presence.registry.heartbeat(userID: connection.userID, connectionID: connection.id, now: now)
        }
    }
}
