import Foundation
import Hummingbird
import NIOCore
import ParleyCore

/// Liveness, readiness, Prometheus metrics and the OpenAPI document.
struct OperationsController {
    let nodeID: String
    /// Dependencies /ready checks: the store, and Redis in cluster mode.
    let checks: [(name: String, check: @Sendable () async throws -> Void)]
    /// Dependencies that can degrade without making the node unready (the event stream: chat goes
    /// on while events wait in the outbox), reported as "ok" or "degraded".
    var advisories: [(name: String, state: @Sendable () -> String)] = []

    struct Status: Encodable {
        var status: String
        var node: String?
        var checks: [String: String]?
    }

    func addRoutes(to router: Router<ParleyRequestContext>) {
        router.get("health") { _, _ in try APIJSON.response(Status(status: "ok")) }
        router.get("ready", use: ready)
        router.get("metrics") { _, _ in
            var buffer: [UInt8] = []
            ParleyMetrics.registry.emit(into: &buffer)
            return Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: buffer))
            )
        }
        router.get("api/v1/openapi.yaml") { _, _ in
            guard let document = Self.openAPIDocument else { throw ParleyError.notFound("OpenAPI document is not bundled.") }
            return Response(
                status: .ok,
                headers: [.contentType: "application/yaml; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: document))
            )
        }
    }

    /// 200 when every dependency answers within two seconds, else 503 naming the failing ones.
    @Sendable func ready(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        var results: [String: String] = [:]
        await withTaskGroup(of: (String, String).self) { group in
            for (name, check) in checks {
                group.addTask {
                    do {
                        try await withTimeout(.seconds(2)) { try await check() }
                        return (name, "ok")
                    } catch {
                        return (name, "failing")
                    }
                }
            }
            for await (name, result) in group { results[name] = result }
        }
        let soft = Set(advisories.map(\.name))
        for (name, state) in advisories { results[name] = state() }
        let failing = results.filter { $0.value != "ok" && !soft.contains($0.key) }
        if failing.isEmpty {
            return try APIJSON.response(Status(status: "ready", node: nodeID, checks: results))
        }
        context.logger.warning("readiness check failed", metadata: ["parley.failing": "\(failing.keys.sorted())"])
        return try APIJSON.response(Status(status: "unavailable", node: nodeID, checks: results), status: .serviceUnavailable)
    }

    static let openAPIDocument: Data? = Bundle.module.url(forResource: "openapi", withExtension: "yaml", subdirectory: "Resources")
        .flatMap { try? Data(contentsOf: $0) }
}
