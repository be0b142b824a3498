import Foundation
import ParleyCore

/// A frame from a client. Fields not used by its `type` are ignored; a field of the wrong type
/// makes the whole frame invalid.
struct ClientFrame: Decodable, Sendable {
    var type: String
    var token: String?
    var conversationId: String?
    var clientMsgId: String?
    var body: String?
    var state: String?
    var seq: Int64?
    var cursors: [String: Int64]?
}

/// Server → client frames. Each encodes to one JSON text frame with a `type` field.
enum ServerFrame {
    struct Hello: Encodable {
        let type = "hello"
        var userId: String
        var sessionId: String
        var heartbeatSeconds: Int
        /// The node holding this socket (for operators and cluster tests).
        var node: String
    }

    struct Ack: Encodable {
        let type = "ack"
        var clientMsgId: String?
        var message: MessageDTO
    }

    struct ErrorFrame: Encodable {
        let type = "error"
        var code: String
        var message: String
        var ref: String?
    }

    struct MessageFrame: Encodable {
        let type = "message"
        var message: MessageDTO
    }

    struct Synced: Encodable {
        let type = "synced"
        var conversationId: String
        var hasMore: Bool
        var lastSeq: Int64?
    }

    struct Receipt: Encodable {
        let type = "receipt"
        var conversationId: String
        var userId: String
        var kind: String
        var seq: Int64
    }

    struct Typing: Encodable {
        let type = "typing"
        var conversationId: String
        var userId: String
        var state: String
    }

    struct ConversationFrame: Encodable {
        let type = "conversation"
        var event: String
        var conversation: ConversationDTO
    }

    struct Pong: Encodable {
        let type = "pong"
    }

    static func encode(_ frame: some Encodable) -> String {
        // Every frame type here encodes infallibly (strings, numbers, dates, UUIDs).
        (try? APIJSON.encoder.encode(frame)).map { String(decoding: $0, as: UTF8.self) }
            ?? #"{"type":"error","code":"internal_error","message":"encoding failed"}"#
    }

    static func error(_ error: ParleyError, ref: String? = nil) -> String {
        encode(ErrorFrame(code: error.code, message: error.message, ref: ref))
    }

    /// The frame for an event, as `viewer` should see it; nil for events that are not frames.
    static func render(_ event: ChatEvent, for viewer: UUID) -> String? {
        switch event {
        case .message(let message):
            encode(MessageFrame(message: MessageDTO(message: message)))
        case .receipt(let conversationID, let userID, let kind, let seq):
            encode(Receipt(conversationId: conversationID.lowercased, userId: userID.lowercased, kind: kind.rawValue, seq: seq))
        case .typing(let conversationID, let userID, let state):
            encode(Typing(conversationId: conversationID.lowercased, userId: userID.lowercased, state: state.rawValue))
        case .presence(let presence):
            encode(PresenceDTO(presence: presence, type: "presence"))
        case .conversation(let change, let conversation):
            encode(ConversationFrame(event: change.rawValue, conversation: ConversationDTO(conversation: conversation, viewer: viewer)))
        case .sessionRevoked:
            nil
        }
    }

    /// Whether a frame differs between viewers (and so must be rendered per recipient).
    static func isViewerSpecific(_ event: ChatEvent) -> Bool {
        if case .conversation = event { return true }
        return false
    }
}
