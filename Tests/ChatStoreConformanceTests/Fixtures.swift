import Foundation
import ParleyCore

/// Small builders so each conformance test reads as the behaviour it checks.
extension ChatStore {
    func makeUser(_ name: String, now: Date = .now) async throws -> User {
        try await createUser(
            NewUser(username: name, email: "\(name)@example.com", displayName: name.capitalized, passwordHash: "hash-\(name)", createdAt: now))
    }

    func makeGroup(owner: User, members: [User] = [], name: String = "Team", now: Date = .now) async throws -> Conversation {
        try await createGroup(id: .v7(), name: name, ownerID: owner.id, memberIDs: members.map(\.id), passcodeHash: nil, now: now)
    }

    /// Sends `body`, optionally as a reply. The message id is taken at `now`, so messages posted at
    /// increasing times have increasing ids (which order search results and `before`) even when
    /// the test runs within one millisecond.
    @discardableResult
    func post(
        _ body: String, from sender: User, to conversation: Conversation, clientMsgID: String? = nil, replyTo: UUID? = nil, now: Date = .now
    ) async throws -> SendResult {
        try await send(
            SendRequest(
                conversationID: conversation.id, senderID: sender.id, clientMsgID: clientMsgID, body: body, messageID: .v7(now: now),
                createdAt: now, replyToID: replyTo))
    }

    /// `message` as the store holds it now.
    func current(_ message: Message) async throws -> Message? {
        try await self.message(conversationID: message.conversationID, messageID: message.id)
    }

    func edit(_ message: Message, to body: String, by editor: User, at: Date = .now) async throws -> MessageChange? {
        try await editMessage(MessageEdit(conversationID: message.conversationID, messageID: message.id, editorID: editor.id, body: body, at: at))
    }

    func delete(_ message: Message, at: Date = .now) async throws -> MessageChange? {
        try await deleteMessage(conversationID: message.conversationID, messageID: message.id, at: at)
    }

    /// Adds (or, with `present: false`, removes) `user`'s reaction `emoji`; at most `maxDistinct`
    /// different emoji per message (the default limit).
    func react(
        _ emoji: String, to message: Message, by user: User, present: Bool = true, maxDistinct: Int = 20, at: Date = .now
    ) async throws -> MessageChange? {
        try await setReaction(
            emoji, present: present, conversationID: message.conversationID, messageID: message.id, userID: user.id, maxDistinct: maxDistinct,
            at: at)
    }

    /// Searches as `user` would (the query parsed as the service parses it).
    func search(_ query: String, as user: User, in conversation: Conversation? = nil, before: UUID? = nil, limit: Int = 20) async throws
        -> SearchPage
    {
        try await searchMessages(
            SearchRequest(query: SearchQuery(parsing: query), userID: user.id, conversationID: conversation?.id, before: before, limit: limit))
    }

    /// The unread mentions of `user` in `conversation`, as their conversation list shows them.
    func mentionCount(of user: User, in conversation: Conversation) async throws -> Int64? {
        try await conversations(for: user.id, limit: 100).first { $0.id == conversation.id }?.mentionCount
    }

    /// Removes every pending outbox event (those of the test's set-up), as a relay would.
    func clearOutbox() async throws {
        while case let events = try await pendingEvents(limit: 1000), !events.isEmpty {
            try await removeEvents(events.map(\.position))
        }
    }
}
