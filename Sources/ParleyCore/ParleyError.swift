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

    public static let conversationNotFound = ParleyError.notFound("Conversation not found.", code: Code.conversationNotFound)
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
            code: Code.rateLimited,
            message: "Too many requests; retry after \(retryAfterSeconds) s.",
            retryAfterSeconds: retryAfterSeconds
        )
    }

    /// Too many failed logins of one account in a row: the next attempt must wait.
    public static func loginDelayed(retryAfterSeconds: Int) -> ParleyError {
        ParleyError(
            .rateLimited,
            code: "login_delayed",
            message: "Too many failed logins for this account; retry after \(retryAfterSeconds) s.",
            retryAfterSeconds: retryAfterSeconds
        )
    }

    /// The node is taking sends faster than it can commit them: retry shortly.
    public static let overloaded = ParleyError(
        .unavailable, code: Code.overloaded, message: "The server is overloaded; retry shortly.", retryAfterSeconds: 1)

    /// The node is shutting down: retry (another node, or this one once restarted).
    public static let shuttingDown = ParleyError(
        .unavailable, code: Code.shuttingDown, message: "The server is shutting down; retry shortly.", retryAfterSeconds: 1)

    public static func `internal`(detail: String) -> ParleyError {
        ParleyError(.internal, code: Code.internalError, message: "Internal server error.", detail: detail)
    }
}

extension ParleyError {
    /// Codes that more than one place emits or that clients are documented to act on.
    public enum Code {
        public static let invalidFrame = "invalid_frame"
        public static let unknownType = "unknown_type"
        public static let binaryNotSupported = "binary_not_supported"
        public static let alreadyAuthenticated = "already_authenticated"
        public static let tooManyCursors = "too_many_cursors"
        public static let invalidID = "invalid_id"
        public static let invalidCursor = "invalid_cursor"
        public static let conversationNotFound = "conversation_not_found"
        public static let rateLimited = "rate_limited"
        public static let overloaded = "overloaded"
        public static let shuttingDown = "shutting_down"
        public static let storeUnavailable = "store_unavailable"
        public static let busUnavailable = "bus_unavailable"
        public static let internalError = "internal_error"
    }
}

extension ParleyError: CustomStringConvertible, CustomDebugStringConvertible {
    public var description: String { "ParleyError(\(code))" }
    public var debugDescription: String {
        "ParleyError(kind: \(kind), code: \(code), message: \(message)\(detail.map { ", detail: \($0)" } ?? ""))"
    }
}
