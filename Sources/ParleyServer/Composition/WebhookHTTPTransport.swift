import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import ParleyCore
import ServiceLifecycle

/// Webhook requests over AsyncHTTPClient (HTTP/1.1 and HTTP/2, TLS for https endpoints). A
/// service: its client lives until graceful shutdown, then closes its connections.
final class WebhookHTTPTransport: WebhookTransport, Service {
    private let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(redirectConfiguration: .disallow))

    func post(_ url: URL, headers: [(String, String)], body: [UInt8], timeout: Duration) async throws -> Int {
        var request = HTTPClientRequest(url: url.absoluteString)
        request.method = .POST
        request.headers.add(contentsOf: headers)
        request.headers.replaceOrAdd(name: "User-Agent", value: "Parley-Webhooks/1")
        request.body = .bytes(ByteBuffer(bytes: body))
        let response = try await client.execute(
            request, timeout: .nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000))
        // Read (and drop) the body so the connection can be reused; endpoints answer briefly.
        _ = try? await response.body.collect(upTo: 64 * 1024)
        return Int(response.status.code)
    }

    func run() async throws {
        try? await gracefulShutdown()
        try await client.shutdown()
    }
}
