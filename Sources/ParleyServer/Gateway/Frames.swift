import Foundation
import NIOCore
import ParleyCore

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

    struct ErrorFrame: Encodable {
        let type = "error"
        var code: String
        var message: String
        var ref: String?
        /// For retryable errors (`overloaded`, `rate_limited`, `*_unavailable`): when to retry.
        var retryAfterSeconds: Int?
    }

    // The frames that carry a message (`ack`, `message`, `updated`) go out at least twice per send,
    // so they are written by hand (`JSONWriter`), with the fields `MessageDTO` encodes; a test holds
    // them equal to the encoder's output.

    /// `{"type":"ack","clientMsgId":…,"message":{…}}` (`clientMsgId` absent when the send had none).
    static func ack(clientMsgID: String?, _ message: Message) -> ByteBuffer {
        var json = JSONWriter(capacity: 400 + message.body.utf8.count)
        json.raw(#"{"type":"ack","#)
        if let clientMsgID {
            json.key("clientMsgId")
            json.string(clientMsgID)
            json.comma()
        }
        json.key("message")
        json.message(message)
        json.raw("}")
        return ByteBuffer(bytes: json.bytes)
    }

    /// `{"type":"message","message":{…}}`.
    static func message(_ message: Message) -> ByteBuffer {
        var json = JSONWriter(capacity: 400 + message.body.utf8.count)
        json.raw(#"{"type":"message","message":"#)
        json.message(message)
        json.raw("}")
        return ByteBuffer(bytes: json.bytes)
    }

    /// A message was edited, deleted or its reactions changed: `{"type":"updated","change":…,
    /// "message":{…},"changeSeq":…}`, where `changeSeq` is the conversation's change sequence number
    /// of this change (the sync cursor for changes).
    static func updated(_ kind: MessageChangeKind, _ message: Message, changeSeq: Int64) -> ByteBuffer {
        var json = JSONWriter(capacity: 400 + message.body.utf8.count)
        json.raw(#"{"type":"updated","change":"#)
        json.string(kind.rawValue)
        json.comma()
        json.key("message")
        json.message(message)
        json.comma()
        json.key("changeSeq")
        json.integer(changeSeq)
        json.raw("}")
        return ByteBuffer(bytes: json.bytes)
    }

    struct Synced: Encodable {
        let type = "synced"
        var conversationId: String
        var hasMore: Bool
        var lastSeq: Int64?
        /// The change cursor to send next time (present when the sync asked for changes).
        var changeSeq: Int64?
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

    /// The frame's JSON, encoded once; the same bytes go to every socket that gets it.
    static func encode(_ frame: some Encodable) -> ByteBuffer {
        // Every frame type here encodes infallibly (strings, numbers, dates, UUIDs).
        guard let data = try? APIJSON.encoder.encode(frame) else {
            return ByteBuffer(string: #"{"type":"error","code":"internal_error","message":"encoding failed"}"#)
        }
        return ByteBuffer(bytes: data)
    }

    static func error(_ error: ParleyError, ref: String? = nil) -> ByteBuffer {
        encode(ErrorFrame(code: error.code, message: error.message, ref: ref, retryAfterSeconds: error.retryAfterSeconds))
    }

    /// The frame for an event, as `viewer` should see it; nil for events that are not frames.
    static func render(_ event: ChatEvent, for viewer: UUID) -> ByteBuffer? {
        switch event {
        case .message(let message):
            self.message(message)
        case .updated(let kind, let message, let changeSeq):
            updated(kind, message, changeSeq: changeSeq)
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
