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

    @discardableResult
    func post(_ body: String, from sender: User, to conversation: Conversation, clientMsgID: String? = nil, now: Date = .now) async throws
        -> SendResult
    {
        try await send(SendRequest(conversationID: conversation.id, senderID: sender.id, clientMsgID: clientMsgID, body: body, createdAt: now))
    }

    /// Removes every pending outbox event (those of the test's set-up), as a relay would.
    func clearOutbox() async throws {
        while case let events = try await pendingEvents(limit: 1000), !events.isEmpty {
            try await removeEvents(events.map(\.position))
        }
    }
}
