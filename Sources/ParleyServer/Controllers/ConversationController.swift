import Foundation
import HTTPTypes
import Hummingbird
import ParleyCore

/// `/api/v1/conversations`: direct chats and groups, membership, messages and read watermarks.
struct ConversationController {
    let chat: ChatService
    /// Removes the blobs of deleted messages and conversations, asked right after each deletion.
    let janitor: AttachmentJanitor
    let limiter: any RateLimiter
    let sendPolicy: RateLimitPolicy
    let maxRequestBytes: Int

    struct CreateRequest: StrictDecodable {
        static let fields: Set<String> = ["type", "userId", "name", "memberIds", "passcode"]
        var type: String
        var userId: UUID?
        var name: String?
        var memberIds: [UUID]?
        var passcode: String?
    }

    struct UpdateRequest: StrictDecodable {
        static let fields: Set<String> = ["name", "passcode"]
        var name: String?
        /// Absent: unchanged; `null`: cleared; a string: set.
        var passcode: String??

        enum CodingKeys: String, CodingKey { case name, passcode }

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            name = try c.decodeIfPresent(String.self, forKey: .name)
            if c.contains(.passcode) {
                passcode = .some(try c.decodeNil(forKey: .passcode) ? nil : try c.decode(String.self, forKey: .passcode))
            } else {
                passcode = nil
            }
        }
    }

    struct MembersRequest: StrictDecodable {
        static let fields: Set<String> = ["userIds"]
        var userIds: [UUID]
    }

    struct RoleRequest: StrictDecodable {
        static let fields: Set<String> = ["role"]
        var role: String
    }

    struct JoinRequest: StrictDecodable {
        static let fields: Set<String> = ["passcode"]
        var passcode: String
    }

    struct SendBody: StrictDecodable {
        static let fields: Set<String> = ["body", "clientMsgId", "replyToId", "attachmentIds"]
        /// May be left out (or empty) when the message carries attachments.
        var body: String?
        var clientMsgId: String?
        var replyToId: UUID?
        var attachmentIds: [UUID]?
    }

    struct EditBody: StrictDecodable {
        static let fields: Set<String> = ["body"]
        var body: String
    }

    struct ReadRequest: StrictDecodable {
        static let fields: Set<String> = ["seq"]
        var seq: Int64
    }

    struct ConversationsResponse: Encodable {
        var conversations: [ConversationDTO]
    }

    struct MessagesResponse: Encodable {
        var messages: [MessageDTO]
        var hasMore: Bool
    }

    struct MessageEnvelope: Encodable {
        var message: MessageDTO
    }

    func addRoutes(to group: RouterGroup<ParleyRequestContext>) {
        group.post(use: create)
        group.get(use: list)
        group.get(":id", use: show)
        group.patch(":id", use: update)
        group.delete(":id", use: delete)
        group.post(":id/members", use: addMembers)
        group.delete(":id/members/:userId", use: removeMember)
        group.patch(":id/members/:userId", use: setRole)
        group.post(":id/join", use: join)
        group.get(":id/messages", use: messages)
        group.post(":id/messages", use: send)
        group.post(":id/read", use: read)
        group.patch(":id/messages/:messageId", use: edit)
        group.delete(":id/messages/:messageId", use: deleteMessage)
        group.put(":id/messages/:messageId/reactions/:emoji", use: react)
        group.delete(":id/messages/:messageId/reactions/:emoji", use: unreact)
    }

    @Sendable func create(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        let caller = try context.requireIdentity().userID
        let body = try await APIJSON.decode(CreateRequest.self, from: request, maxBytes: maxRequestBytes)
        switch body.type {
        case "direct":
            guard let other = body.userId else { throw ParleyError.invalid("Missing required field userId.", code: "invalid_field") }
            guard body.name == nil, body.memberIds == nil, body.passcode == nil else {
                throw ParleyError.invalid("A direct conversation takes only userId.", code: "invalid_field")
            }
            let (conversation, created) = try await chat.createDirect(caller: caller, with: other)
            return try envelope(conversation, caller, status: created ? .created : .ok)
        case "group":
            guard let name = body.name else { throw ParleyError.invalid("Missing required field name.", code: "invalid_field") }
            guard body.userId == nil else { throw ParleyError.invalid("A group takes memberIds, not userId.", code: "invalid_field") }
            let conversation = try await chat.createGroup(caller: caller, name: name, memberIDs: body.memberIds ?? [], passcode: body.passcode)
            context.logger.info("group created", metadata: ["parley.conversation_id": "\(conversation.id.lowercased)"])
            return try envelope(conversation, caller, status: .created)
        default:
            throw ParleyError.invalid("type must be \"direct\" or \"group\".", code: "invalid_type")
        }
    }

    @Sendable func list(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        let caller = try context.requireIdentity().userID
        let conversations = try await chat.conversations(caller: caller)
        return try APIJSON.response(ConversationsResponse(conversations: conversations.map { ConversationDTO(conversation: $0, viewer: caller) }))
    }

    @Sendable func show(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        let caller = try context.requireIdentity().userID
        return try envelope(try await chat.conversation(caller: caller, id: try context.parameters.uuid("id")), caller)
    }

    @Sendable func update(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        let caller = try context.requireIdentity().userID
        let id = try context.parameters.uuid("id")
        let body = try await APIJSON.decode(UpdateRequest.self, from: request, maxBytes: maxRequestBytes)
        let conversation = try await chat.updateGroup(caller: caller, id: id, name: body.name, passcode: body.passcode)
        return try envelope(conversation, caller)
    }

    @Sendable func delete(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        let caller = try context.requireIdentity().userID
        try await chat.deleteConversation(caller: caller, id: try context.parameters.uuid("id"))
        janitor.poke()
        return Response(status: .noContent)
    }

    @Sendable func addMembers(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        let caller = try context.requireIdentity().userID
        let id = try context.parameters.uuid("id")
        let body = try await APIJSON.decode(MembersRequest.self, from: request, maxBytes: maxRequestBytes)
        return try envelope(try await chat.addMembers(caller: caller, id: id, userIDs: body.userIds), caller)
    }

    @Sendable func removeMember(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        let caller = try context.requireIdentity().userID
        try await chat.removeMember(caller: caller, id: try context.parameters.uuid("id"), userID: try context.parameters.uuid("userId"))
        return Response(status: .noContent)
    }

    @Sendable func setRole(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        let caller = try context.requireIdentity().userID
        let id = try context.parameters.uuid("id")
        let userID = try context.parameters.uuid("userId")
        let body = try await APIJSON.decode(RoleRequest.self, from: request, maxBytes: maxRequestBytes)
        guard let role = MemberRole(rawValue: body.role) else {
            throw ParleyError.invalid("role must be \"admin\" or \"member\".", code: "invalid_role")
        }
        return try envelope(try await chat.setRole(caller: caller, id: id, userID: userID, role: role), caller)
    }

    @Sendable func join(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        let caller = try context.requireIdentity().userID
        let id = try context.parameters.uuid("id")
        let body = try await APIJSON.decode(JoinRequest.self, from: request, maxBytes: maxRequestBytes)
        return try envelope(try await chat.join(caller: caller, id: id, passcode: body.passcode), caller)
    }

    @Sendable func messages(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        let caller = try context.requireIdentity().userID
        let id = try context.parameters.uuid("id")
        let before = try request.queryInt("before")
        let after = try request.queryInt("after")
        let cursor: PageCursor
        switch (before, after) {
        case (nil, nil): cursor = .latest
        case (let before?, nil): cursor = .before(Int64(before))
        case (nil, let after?): cursor = .after(Int64(after))
        case (_?, _?): throw ParleyError.invalid("Use before or after, not both.", code: "invalid_cursor")
        }
        let page = try await chat.messages(caller: caller, conversationID: id, cursor: cursor, limit: try request.queryInt("limit"))
        return try APIJSON.response(MessagesResponse(messages: page.messages.map(MessageDTO.init), hasMore: page.hasMore))
    }

    @Sendable func send(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        let caller = try context.requireIdentity().userID
        let id = try context.parameters.uuid("id")
        try await limiter.enforce("user:" + caller.lowercased, policy: sendPolicy, now: .now)
        let body = try await APIJSON.decode(SendBody.self, from: request, maxBytes: maxRequestBytes)
        let headerKey = request.headers[HTTPField.Name("Idempotency-Key")!]
        if let headerKey, let bodyKey = body.clientMsgId, headerKey != bodyKey {
            throw ParleyError.invalid("Idempotency-Key and clientMsgId differ.", code: "invalid_client_msg_id")
        }
        let attachmentIDs = body.attachmentIds ?? []
        guard let text = body.body ?? (attachmentIDs.isEmpty ? nil : "") else {
            throw ParleyError.invalid("Missing required field body.", code: "invalid_field")
        }
        let result = try await chat.send(
            caller: caller, conversationID: id, body: text, clientMsgID: body.clientMsgId ?? headerKey, replyToID: body.replyToId,
            attachmentIDs: attachmentIDs)
        return try APIJSON.response(MessageEnvelope(message: MessageDTO(message: result.message)), status: result.replayed ? .ok : .created)
    }

    @Sendable func edit(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        let caller = try context.requireIdentity().userID
        let id = try context.parameters.uuid("id")
        let messageID = try context.parameters.uuid("messageId")
        let body = try await APIJSON.decode(EditBody.self, from: request, maxBytes: maxRequestBytes)
        let message = try await chat.editMessage(caller: caller, conversationID: id, messageID: messageID, body: body.body)
        return try APIJSON.response(MessageEnvelope(message: MessageDTO(message: message)))
    }

    @Sendable func deleteMessage(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        let caller = try context.requireIdentity().userID
        try await chat.deleteMessage(
            caller: caller, conversationID: try context.parameters.uuid("id"), messageID: try context.parameters.uuid("messageId"))
        janitor.poke()
        return Response(status: .noContent)
    }

    @Sendable func react(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        try await setReaction(present: true, context: context)
    }

    @Sendable func unreact(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        try await setReaction(present: false, context: context)
    }

    private func setReaction(present: Bool, context: ParleyRequestContext) async throws -> Response {
        let caller = try context.requireIdentity().userID
        let id = try context.parameters.uuid("id")
        let messageID = try context.parameters.uuid("messageId")
        guard let raw = context.parameters.get("emoji") else { throw ParleyError.invalid("A reaction is a single emoji.", code: "invalid_emoji") }
        // The router hands over the path segment as sent; emoji arrive percent-encoded.
        guard let emoji = raw.removingPercentEncoding else { throw ParleyError.invalid("A reaction is a single emoji.", code: "invalid_emoji") }
        try await chat.setReaction(caller: caller, conversationID: id, messageID: messageID, emoji: emoji, present: present)
        return Response(status: .noContent)
    }

    @Sendable func read(_ request: Request, context: ParleyRequestContext) async throws -> Response {
        let caller = try context.requireIdentity().userID
        let id = try context.parameters.uuid("id")
        let body = try await APIJSON.decode(ReadRequest.self, from: request, maxBytes: maxRequestBytes)
        try await chat.advance(.read, caller: caller, conversationID: id, seq: body.seq)
        return Response(status: .noContent)
    }

    private func envelope(_ conversation: Conversation, _ viewer: UUID, status: HTTPResponse.Status = .ok) throws -> Response {
        try APIJSON.response(ConversationEnvelope(conversation: ConversationDTO(conversation: conversation, viewer: viewer)), status: status)
    }
}
