import HTTPTypes
import Hummingbird
import NIOCore
import ParleyCore

enum ClientAddress {
    /// The caller's IP: the socket peer, or the proxy's `X-Real-IP` / last `X-Forwarded-For` hop
    /// when the node is configured to trust its reverse proxy.
    static func of(_ request: Request, context: ParleyRequestContext, trustProxy: Bool) -> String {
        of(request, remoteAddress: context.remoteAddress, trustProxy: trustProxy)
    }

    static func of(_ request: Request, remoteAddress: SocketAddress?, trustProxy: Bool) -> String {
        if trustProxy {
            if let real = request.headers[HTTPField.Name("X-Real-IP")!], !real.isEmpty {
                return real
            }
            if let forwarded = request.headers[HTTPField.Name("X-Forwarded-For")!],
                let last = forwarded.split(separator: ",").last?.trimmingCharacters(in: .whitespaces), !last.isEmpty
            {
                return last
            }
        }
        return remoteAddress?.ipAddress ?? "unknown"
    }
}

/// Per-IP token bucket in front of every route.
struct IPRateLimitMiddleware: RouterMiddleware {
    typealias Context = ParleyRequestContext
    var limiter: any RateLimiter
    var policy: RateLimitPolicy
    var trustProxy: Bool

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let ip = ClientAddress.of(request, context: context, trustProxy: trustProxy)
        try await limiter.enforce("ip:" + ip, policy: policy, now: .now)
        return try await next(request, context)
    }
}
