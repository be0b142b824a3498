import HTTPTypes
import Hummingbird

/// Conservative security headers on every response. API responses are never cached.
struct SecurityHeadersMiddleware<Context: RequestContext>: RouterMiddleware {
    var hsts: Bool

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response = try await next(request, context)
        response.headers[.xContentTypeOptions] = "nosniff"
        response.headers[HTTPField.Name("X-Frame-Options")!] = "DENY"
        // Not "no-referrer": with it browsers send `Origin: null` on same-origin POSTs, which the CSRF check refuses.
        response.headers[HTTPField.Name("Referrer-Policy")!] = "same-origin"
        // A response may bring a stricter policy of its own (attachments: a sandbox).
        if response.headers[.contentSecurityPolicy] == nil {
            response.headers[.contentSecurityPolicy] =
                "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
        }
        response.headers[HTTPField.Name("Cross-Origin-Opener-Policy")!] = "same-origin"
        if hsts {
            response.headers[.strictTransportSecurity] = "max-age=31536000"
        }
        if request.uri.path.hasPrefix("/api/"), response.headers[.cacheControl] == nil {
            response.headers[.cacheControl] = "no-store"
        }
        return response
    }
}
