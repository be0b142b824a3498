import Foundation
import NIOCore
import ParleyCore

/// A `send` frame's message, as the gateway hands it to the send pipeline.
struct OutgoingMessage: Sendable {
    var conversationID: UUID
    var clientMsgID: String?
    var body: String
    var replyToID: UUID?
    var attachmentIDs: [UUID]
}

/// A frame from a client, decoded and checked: one case per frame type, with typed fields.
/// Decoding fails with a `ClientFrame.Invalid` that carries the error frame to send back.
enum ClientFrame: Sendable {
    case auth(token: String)
    case send(OutgoingMessage)
    case typing(conversationID: UUID, state: TypingState)
    case receipt(Watermark, conversationID: UUID, seq: Int64)
    /// Last seen seq per conversation id (keys are checked one by one, so that one bad key does not
    /// spoil the others).
    /// `changes`: the change cursor per conversation, for clients that keep edits, deletions and
    /// reactions in step (see docs/protocol.md).
    case sync(cursors: [String: Int64], changes: [String: Int64])
    case ping

    /// Why a frame was refused, and what its error frame refers to.
    struct Invalid: Error {
        /// The frame's `type`, when it had a string one.
        var type: String?
        var error: ParleyError
        /// The frame's clientMsgId or conversationId, echoed as the error's `ref`.
        var ref: String?
    }

    /// Whether the frame may be sent before the socket is authenticated.
    var allowedBeforeAuth: Bool {
        switch self {
        case .auth, .ping: true
        default: false
        }
    }

    /// The fields any frame may carry. A field of the wrong JSON type makes the whole frame invalid;
    /// fields its `type` does not use are ignored.
    private struct Fields: Decodable {
        var type: String
        var token: String?
        var conversationId: String?
        var clientMsgId: String?
        var body: String?
        var state: String?
        var seq: Int64?
        var cursors: [String: Int64]?
        var changes: [String: Int64]?
        var replyToId: String?
        var attachmentIds: [String]?
    }

    private static let malformed = ParleyError.invalid(
        "Frame is not a JSON object with a string \"type\" and valid fields.", code: ParleyError.Code.invalidFrame)

    /// Decodes one text frame.
    static func decode(_ text: String) throws(Invalid) -> ClientFrame {
        let fields: Fields
        do {
            fields = try APIJSON.decoder.decode(Fields.self, from: Data(text.utf8))
        } catch {
            throw Invalid(type: nil, error: malformed)
        }
        let ref = fields.clientMsgId ?? fields.conversationId
        func invalid(_ message: String, code: String = ParleyError.Code.invalidFrame) -> Invalid {
            Invalid(type: fields.type, error: .invalid(message, code: code), ref: ref)
        }
        func conversationID() throws(Invalid) -> UUID {
            guard let raw = fields.conversationId, let id = UUID(canonical: raw) else {
                throw invalid("conversationId must be a conversation id.")
            }
            return id
        }
        switch fields.type {
        case "auth":
            guard let token = fields.token else { throw invalid("auth needs a token.") }
            return .auth(token: token)
        case "send":
            let id = try conversationID()
            var attachmentIDs: [UUID] = []
            for raw in fields.attachmentIds ?? [] {
                guard let id = UUID(canonical: raw) else { throw invalid("attachmentIds must be upload ids.", code: ParleyError.Code.invalidID) }
                attachmentIDs.append(id)
            }
            // A message of attachments alone may leave the body out.
            guard let body = fields.body ?? (attachmentIDs.isEmpty ? nil : "") else { throw invalid("send needs a body.") }
            var replyToID: UUID?
            if let raw = fields.replyToId {
                guard let id = UUID(canonical: raw) else { throw invalid("replyToId must be a message id.", code: ParleyError.Code.invalidID) }
                replyToID = id
            }
            return .send(
                OutgoingMessage(
                    conversationID: id, clientMsgID: fields.clientMsgId, body: body, replyToID: replyToID, attachmentIDs: attachmentIDs))
        case "typing":
            let id = try conversationID()
            guard let state = fields.state.flatMap(TypingState.init(rawValue:)) else {
                throw invalid("state must be \"start\" or \"stop\".")
            }
            return .typing(conversationID: id, state: state)
        case "delivered", "read":
            let id = try conversationID()
            guard let seq = fields.seq else { throw invalid("\(fields.type) needs a seq.") }
            return .receipt(fields.type == "read" ? .read : .delivered, conversationID: id, seq: seq)
        case "sync":
            guard let cursors = fields.cursors else { throw invalid("sync needs cursors.") }
            return .sync(cursors: cursors, changes: fields.changes ?? [:])
        case "ping":
            return .ping
        default:
            throw invalid("Unknown frame type.", code: ParleyError.Code.unknownType)
        }
    }
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
