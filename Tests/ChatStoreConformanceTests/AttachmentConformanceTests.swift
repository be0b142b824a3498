import Foundation
import ParleyCore
import ParleyTestSupport
import Testing

/// Swift Testing has an `Attachment` too: this file means Parley's.
typealias Attachment = ParleyCore.Attachment

/// Attachment rows: an upload's life from `uploading` to attached, who may read it, what deleting
/// its message or conversation does, and what the janitor is handed.
@Suite("ChatStore conformance: attachments")
struct AttachmentConformanceTests {
    /// Records a finished upload of `user`'s, as the upload endpoint does.
    static func upload(
        _ store: any ChatStore, by user: User, name: String = "file.bin", size: Int64 = 10, type: String = "application/octet-stream",
        at: Date = .now
    ) async throws -> Attachment {
        var attachment = Attachment(
            id: .v7(), uploaderID: user.id, name: name, contentType: "application/octet-stream", size: 0, createdAt: at.truncatedToMillis)
        try await store.beginUpload(attachment, at: at)
        attachment.size = size
        attachment.contentType = type
        if type.hasPrefix("image/") {
            attachment.width = 640
            attachment.height = 480
            attachment.hasThumbnail = true
        }
        try await store.finishUpload(attachment, at: at)
        return attachment
    }

    @discardableResult
    static func send(
        _ store: any ChatStore, _ body: String, from user: User, to conversation: Conversation, attachments: [Attachment], clientMsgID: String? = nil
    ) async throws -> SendResult {
        try await store.send(
            SendRequest(
                conversationID: conversation.id, senderID: user.id, clientMsgID: clientMsgID, body: body, attachmentIDs: attachments.map(\.id)))
    }

    @Test("an upload reads back for its uploader only, then for every member once it is sent, in order", arguments: StoreFactory.all)
    func lifecycle(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let eve = try await store.makeUser("eve")
            let group = try await store.makeGroup(owner: alice, members: [bob])
            let photo = try await Self.upload(store, by: alice, name: "photo.jpg", size: 123_456, type: "image/jpeg")
            let notes = try await Self.upload(store, by: alice, name: "notes.txt", size: 42, type: "text/plain")

            #expect(try await store.attachment(id: photo.id, readableBy: alice.id) == photo)
            #expect(try await store.attachment(id: photo.id, readableBy: bob.id) == nil, "not sent yet")
            #expect(try await store.storedBytes(of: alice.id) == 123_498)

            let sent = try await Self.send(store, "", from: alice, to: group, attachments: [notes, photo])
            var expected = [notes, photo]
            for i in expected.indices {
                expected[i].conversationID = group.id
                expected[i].messageID = sent.message.id
            }
            #expect(sent.message.attachments == expected, "in the order the sender listed them")
            #expect(try await store.current(sent.message)?.attachments == expected)
            let page = try await store.messages(conversationID: group.id, cursor: .after(0), limit: 10)
            #expect(page.messages.first?.attachments == expected)
            #expect(try await store.conversation(id: group.id)?.lastMessage?.attachments == expected)
            #expect(try await store.attachment(id: photo.id, readableBy: bob.id) == expected[1])
            #expect(try await store.attachment(id: photo.id, readableBy: eve.id) == nil, "not a member")
            #expect(try await store.attachment(id: UUID(), readableBy: alice.id) == nil)

            // Bob leaves: what he could read before is closed to him now.
            try await store.removeMember(conversationID: group.id, userID: bob.id, now: .now)
            #expect(try await store.attachment(id: photo.id, readableBy: bob.id) == nil)
        }
    }

    @Test("only the sender's own unsent uploads attach; a refused send writes nothing; a replay returns the original", arguments: StoreFactory.all)
    func attachRules(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let group = try await store.makeGroup(owner: alice, members: [bob])
            let bobs = try await Self.upload(store, by: bob)
            await expectParleyError("invalid_attachment") { try await Self.send(store, "stolen", from: alice, to: group, attachments: [bobs]) }

            let mine = try await Self.upload(store, by: alice)
            let first = try await Self.send(store, "one", from: alice, to: group, attachments: [mine], clientMsgID: "c-1")
            await expectParleyError("invalid_attachment") { try await Self.send(store, "again", from: alice, to: group, attachments: [mine]) }
            let replay = try await Self.send(store, "one", from: alice, to: group, attachments: [mine], clientMsgID: "c-1")
            #expect(replay.replayed)
            #expect(replay.message == first.message)

            // Unfinished uploads and ids named twice are refused too.
            let unfinished = Attachment(id: .v7(), uploaderID: alice.id, name: "x", contentType: "application/octet-stream", size: 0, createdAt: .now)
            try await store.beginUpload(unfinished, at: .now)
            await expectParleyError("invalid_attachment") { try await Self.send(store, "half", from: alice, to: group, attachments: [unfinished]) }
            let twice = try await Self.upload(store, by: alice)
            await expectParleyError("invalid_attachment") { try await Self.send(store, "dup", from: alice, to: group, attachments: [twice, twice]) }
            #expect(try await store.conversation(id: group.id)?.lastSeq == 1, "nothing refused was stored")
        }
    }

    @Test("deleting a message or a conversation releases its attachments to the janitor", arguments: StoreFactory.all)
    func release(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let group = try await store.makeGroup(owner: alice)
            let other = try await store.makeGroup(owner: alice, name: "Other")
            let a = try await Self.upload(store, by: alice)
            let b = try await Self.upload(store, by: alice)
            let c = try await Self.upload(store, by: alice)
            let message = try await Self.send(store, "a", from: alice, to: group, attachments: [a]).message
            try await Self.send(store, "b", from: alice, to: group, attachments: [b])
            try await Self.send(store, "c", from: alice, to: other, attachments: [c])
            let now = Date.now
            let far = now.addingTimeInterval(-86_400)
            #expect(try await store.disposableAttachments(unsentBefore: far, abandonedBefore: far, limit: 10).isEmpty)

            let change = try #require(try await store.delete(message))
            #expect(change.message.attachments == [], "a deleted message has no attachments")
            #expect(try await store.attachment(id: a.id, readableBy: alice.id) == nil)
            #expect(try await store.disposableAttachments(unsentBefore: far, abandonedBefore: far, limit: 10).map(\.id) == [a.id])
            #expect(try await store.storedBytes(of: alice.id) == 20, "released files no longer count")

            try await store.deleteConversation(id: other.id)
            #expect(Set(try await store.disposableAttachments(unsentBefore: far, abandonedBefore: far, limit: 10).map(\.id)) == [a.id, c.id])
            try await store.forgetAttachments(ids: [a.id, c.id])
            #expect(try await store.disposableAttachments(unsentBefore: far, abandonedBefore: far, limit: 10).isEmpty)
            #expect(try await store.attachment(id: b.id, readableBy: alice.id) != nil, "the other message keeps its file")
        }
    }

    @Test("uploads never sent and uploads that never finished are handed over once old enough", arguments: StoreFactory.all)
    func expiry(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let old = Date.now.addingTimeInterval(-7200)
            let stale = try await Self.upload(store, by: alice, at: old)
            let fresh = try await Self.upload(store, by: alice)
            let dead = Attachment(id: .v7(), uploaderID: alice.id, name: "x", contentType: "application/octet-stream", size: 0, createdAt: old)
            try await store.beginUpload(dead, at: old)
            let hourAgo = Date.now.addingTimeInterval(-3600)
            let found = try await store.disposableAttachments(unsentBefore: hourAgo, abandonedBefore: hourAgo, limit: 10).map(\.id)
            #expect(Set(found) == [stale.id, dead.id])
            #expect(!found.contains(fresh.id))
            #expect(try await store.disposableAttachments(unsentBefore: hourAgo, abandonedBefore: hourAgo, limit: 1).count == 1)
        }
    }

    @Test("message.created carries the attachments' metadata", arguments: StoreFactory.all)
    func event(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let group = try await store.makeGroup(owner: alice)
            try await store.clearOutbox()
            let photo = try await Self.upload(store, by: alice, name: "photo.jpg", size: 9, type: "image/jpeg")
            try await Self.send(store, "look", from: alice, to: group, attachments: [photo])
            let records = try await store.pendingEvents(limit: 10).filter { $0.type == "message.created" }
            guard !records.isEmpty else { return }  // an adapter built without an outbox
            let envelope = try #require(try JSONSerialization.jsonObject(with: Data(records[0].envelope)) as? [String: Any])
            let message = try #require((envelope["data"] as? [String: Any])?["message"] as? [String: Any])
            let attachments = try #require(message["attachments"] as? [[String: Any]])
            #expect(attachments.count == 1)
            #expect(attachments.first?["name"] as? String == "photo.jpg")
            #expect(attachments.first?["url"] as? String == "/api/v1/attachments/\(photo.id.lowercased)")
            #expect(attachments.first?["thumbnailUrl"] as? String == "/api/v1/attachments/\(photo.id.lowercased)/thumbnail")
            #expect((attachments.first?["width"] as? NSNumber)?.intValue == 640)
        }
    }
}
