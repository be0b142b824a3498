import Foundation

/// A `send` frame's message, as the gateway hands it to the send pipeline.
public struct OutgoingMessage: Sendable, Equatable {
    public var conversationID: UUID
    public var clientMsgID: String?
    public var body: String
    public var replyToID: UUID?
    public var attachmentIDs: [UUID]

    public init(conversationID: UUID, clientMsgID: String?, body: String, replyToID: UUID?, attachmentIDs: [UUID]) {
        self.conversationID = conversationID
        self.clientMsgID = clientMsgID
        self.body = body
        self.replyToID = replyToID
        self.attachmentIDs = attachmentIDs
    }
}

/// A frame from a client, decoded and checked: one case per frame type, with typed fields.
/// Decoding fails with a `ClientFrame.Invalid` that carries the error frame to send back.
public enum ClientFrame: Sendable, Equatable {
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
    public struct Invalid: Error {
        /// The frame's `type`, when it had a string one.
        public var type: String?
        public var error: ParleyError
        /// The frame's clientMsgId or conversationId, echoed as the error's `ref`.
        public var ref: String?
    }

    /// Whether the frame may be sent before the socket is authenticated.
    public var allowedBeforeAuth: Bool {
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

    private static let decoder = JSONDecoder()

    private static let malformed = ParleyError.invalid(
        "Frame is not a JSON object with a string \"type\" and valid fields.", code: ParleyError.Code.invalidFrame)

    /// Decodes one text frame.
    public static func decode(_ text: String) throws(Invalid) -> ClientFrame {
        let fields: Fields
        do {
            fields = try decoder.decode(Fields.self, from: Data(text.utf8))
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
