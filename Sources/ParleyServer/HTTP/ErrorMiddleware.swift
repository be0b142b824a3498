import Hummingbird
import Logging
import NIOCore
import ParleyCore

/// Turns every error into the v1 error body `{"error":{"code","message"}}` with the right status.
/// Internal errors are logged with their detail and answered with a generic message.
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as ParleyError {
            if error.kind == .internal {
                context.logger.error("internal error", metadata: ["parley.error": "\(String(reflecting: error))"])
            }
            return Self.response(for: error)
        } catch let error as any HTTPResponseError {
            let status = error.status
            let code: String
            let message: String
            switch status.code {
            case 404:
                (code, message) = ("not_found", "No such endpoint.")
            case 405:
                (code, message) = ("method_not_allowed", "Method not allowed on this endpoint.")
            case 413:
                (code, message) = ("body_too_large", "Request body is too large.")
            default:
                (code, message) = (Self.snakeCase(status.reasonPhrase), status.reasonPhrase)
            }
            return Self.response(status: status, code: code, message: message)
        } catch {
            context.logger.error("unhandled error", metadata: ["parley.error": "\(String(reflecting: error))"])
            return Self.response(for: .internal(detail: "\(error)"))
        }
    }

    static func response(for error: ParleyError) -> Response {
        var headers: HTTPFields = [:]
        if let retry = error.retryAfterSeconds {
            headers[.retryAfter] = String(retry)
        }
        return response(status: status(for: error.kind), code: error.code, message: error.message, headers: headers)
    }

    static func response(status: HTTPResponse.Status, code: String, message: String, headers: HTTPFields = [:]) -> Response {
        let body = ErrorBody(error: .init(code: code, message: message))
        return (try? APIJSON.response(body, status: status, headers: headers)) ?? Response(status: status, headers: headers)
    }

    static func status(for kind: ParleyError.Kind) -> HTTPResponse.Status {
        switch kind {
        case .invalidInput: .badRequest
        case .unauthenticated: .unauthorized
        case .forbidden: .forbidden
        case .notFound: .notFound
        case .conflict: .conflict
        case .payloadTooLarge: .contentTooLarge
        case .rateLimited: .tooManyRequests
        case .unavailable: .serviceUnavailable
        case .internal: .internalServerError
        }
    }

    private static func snakeCase(_ phrase: String) -> String {
        phrase.lowercased().map { $0.isLetter || $0.isNumber ? $0 : "_" }.reduce(into: "") { $0.append($1) }
    }
}

struct ErrorBody: Codable, Sendable {
    struct Detail: Codable, Sendable {
        var code: String
        var message: String
    }

    var error: Detail
}
