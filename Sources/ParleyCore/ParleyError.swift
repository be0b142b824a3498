/// The one error type the domain and its adapters throw across module boundaries.
///
/// `code` is a stable snake_case identifier that clients may switch on; `message` is safe to
/// show to a user. `detail` is for operators only: it appears in `debugDescription`, never in
/// `description` or in a response body.
public struct ParleyError: Error, Sendable, Equatable {
    /// How the error maps onto the edge (HTTP status, WebSocket error frame).
    public enum Kind: String, Sendable, Equatable {
        case invalidInput
        case unauthenticated
        case forbidden
        case notFound
        case conflict
        case payloadTooLarge
        case rateLimited
        case unavailable
        case `internal`
    }

    public var kind: Kind
    public var code: String
    public var message: String
    /// Seconds a client should wait before retrying (rate limits).
    public var retryAfterSeconds: Int?
    /// Operator-only detail, never sent to clients.
    public var detail: String?

    public init(_ kind: Kind, code: String, message: String, retryAfterSeconds: Int? = nil, detail: String? = nil) {
        self.kind = kind
        self.code = code
        self.message = message
        self.retryAfterSeconds = retryAfterSeconds
        self.detail = detail
    }

    public static func invalid(_ message: String, code: String = "invalid_input") -> ParleyError {
        ParleyError(.invalidInput, code: code, message: message)
    }

    public static func unauthenticated(_ message: String = "Authentication is required.", code: String = "unauthenticated") -> ParleyError {
        ParleyError(.unauthenticated, code: code, message: message)
    }

    public static func forbidden(_ message: String, code: String = "forbidden") -> ParleyError {
        ParleyError(.forbidden, code: code, message: message)
    }

    public static func notFound(_ message: String = "Not found.", code: String = "not_found") -> ParleyError {
        ParleyError(.notFound, code: code, message: message)
    }

    public static let conversationNotFound = ParleyError.notFound("Conversation not found.", code: "conversation_not_found")
    public static let userNotFound = ParleyError.notFound("User not found.", code: "user_not_found")

    public static func conflict(_ message: String, code: String = "conflict") -> ParleyError {
        ParleyError(.conflict, code: code, message: message)
    }

    public static func tooLarge(_ message: String, code: String = "payload_too_large") -> ParleyError {
        ParleyError(.payloadTooLarge, code: code, message: message)
    }

    public static func rateLimited(retryAfterSeconds: Int) -> ParleyError {
        ParleyError(
            .rateLimited,
            code: "rate_limited",
            message: "Too many requests; retry after \(retryAfterSeconds) s.",
            retryAfterSeconds: retryAfterSeconds
        )
    }

    public static func `internal`(detail: String) -> ParleyError {
        ParleyError(.internal, code: "internal_error", message: "Internal server error.", detail: detail)
    }
}

extension ParleyError: CustomStringConvertible, CustomDebugStringConvertible {
    public var description: String { "ParleyError(\(code))" }
    public var debugDescription: String {
        "ParleyError(kind: \(kind), code: \(code), message: \(message)\(detail.map { ", detail: \($0)" } ?? ""))"
    }
}
