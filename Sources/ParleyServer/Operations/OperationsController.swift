import Foundation
import Hummingbird
import NIOCore
import ParleyCore

/// Liveness, readiness, Prometheus metrics and the OpenAPI document.
struct OperationsController {
    let store: any ChatStore

    struct Status: Encodable {
        var status: String
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

    @Sendable func ready(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        do {
            try await store.ping()
            return try APIJSON.response(Status(status: "ready", checks: ["store": "ok"]))
        } catch {
            context.logger.warning("readiness check failed", metadata: ["parley.error": "\(error)"])
            return try APIJSON.response(Status(status: "unavailable", checks: ["store": "failing"]), status: .serviceUnavailable)
        }
    }

    static let openAPIDocument: Data? = Bundle.module.url(forResource: "openapi", withExtension: "yaml", subdirectory: "Resources")
        .flatMap { try? Data(contentsOf: $0) }
}
