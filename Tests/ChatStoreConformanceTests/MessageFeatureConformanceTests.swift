import Foundation
import ParleyCore
import ParleyTestSupport
import Testing

/// What happens to a message after it is sent (edits, deletions, reactions), what it points at
/// (replies, mentions), how a client catches up on changes, and full-text search.
@Suite("ChatStore conformance: edits, deletions, reactions, replies, mentions, changes and search")
struct MessageFeatureConformanceTests {
    /// An envelope, parsed as any consumer would parse it.
    private func envelope(_ record: OutboxRecord) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(record.envelope)) as? [String: Any])
    }

    // MARK: Edits

    @Test("an edit replaces the body, sets editedAt and takes the conversation's next change number", arguments: StoreFactory.all)
    func edit(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let group = try await store.makeGroup(owner: alice, members: [bob])
            let original = try await store.post("see you at 10", from: alice, to: group).message
            try await store.post("ok", from: bob, to: group)
            let at = Date.now.addingTimeInterval(5)

            let change = try #require(try await store.edit(original, to: "see you at 11", by: alice, at: at))
            #expect(change.kind == .edited)
            #expect(change.changeSeq == 1)
            #expect(change.message.body == "see you at 11")
            #expect(change.message.editedAt == at.truncatedToMillis)
            #expect(change.message.deletedAt == nil)
            #expect(change.message.seq == original.seq, "an edit keeps the message's place")
            #expect(change.message.createdAt == original.createdAt)
            #expect(change.message.changeSeq == 1)
            #expect(Set(change.recipients) == [alice.id, bob.id])
            #expect(try await store.current(original) == change.message, "reads back as the change returned it")
            let page = try await store.messages(conversationID: group.id, cursor: .after(0), limit: 10)
            #expect(page.messages.map(\.seq) == [1, 2])
            #expect(page.messages.map(\.body) == ["see you at 11", "ok"])

            let again = try #require(try await store.edit(original, to: "see you at noon", by: alice))
            #expect(again.changeSeq == 2)
            #expect(again.message.changeSeq == 2)
            let conversation = try #require(try await store.conversation(id: group.id))
            #expect(conversation.changeSeq == 2)
            #expect(conversation.lastSeq == 2, "an edit is not a new message")
            #expect(conversation.lastMessage?.body == "ok")
        }
    }

    @Test("only the sender edits; unknown, deleted and unchanged edits write nothing", arguments: StoreFactory.all)
    func editRefusals(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let group = try await store.makeGroup(owner: alice, members: [bob])
            let other = try await store.makeGroup(owner: bob, name: "Other")
            let message = try await store.post("hello", from: alice, to: group).message
            let elsewhere = try await store.post("elsewhere", from: bob, to: other).message
            try await store.clearOutbox()

            await expectParleyError("not_message_sender") { try await store.edit(message, to: "hijacked", by: bob) }
            await expectParleyError("message_not_found") {
                try await store.editMessage(MessageEdit(conversationID: group.id, messageID: UUID(), editorID: alice.id, body: "x", at: .now))
            }
            // A message id of another conversation is not a message of this one.
            await expectParleyError("message_not_found") {
                try await store.editMessage(
                    MessageEdit(conversationID: group.id, messageID: elsewhere.id, editorID: bob.id, body: "x", at: .now))
            }
            #expect(try await store.edit(message, to: "hello", by: alice) == nil, "the same body: nothing to change")

            #expect(try await store.current(message) == message, "body, editedAt and change number untouched")
            #expect(try await store.conversation(id: group.id)?.changeSeq == 0, "refused and unchanged edits take no change number")
            #expect(try await store.pendingEvents(limit: 10).isEmpty, "and write no event")

            _ = try #require(try await store.delete(message))
            await expectParleyError("message_deleted") { try await store.edit(message, to: "resurrected", by: alice) }
            #expect(try await store.current(message)?.body == "")
            #expect(try await store.conversation(id: group.id)?.changeSeq == 1, "only the deletion took a change number")
        }
    }

    // MARK: Deletions

    @Test("a deletion empties the body and keeps the seq; mentions and reactions go; deleting again is a no-op", arguments: StoreFactory.all)
    func delete(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let group = try await store.makeGroup(owner: alice, members: [bob])
            try await store.post("before", from: alice, to: group)
            let secret = try await store.post("the code is hunter2 @bob", from: alice, to: group).message
            try await store.post("after", from: alice, to: group)
            #expect(secret.mentions == [bob.id])
            _ = try #require(try await store.react("👍", to: secret, by: bob))
            #expect(try await store.mentionCount(of: bob, in: group) == 1)
            let at = Date.now.addingTimeInterval(3)

            let change = try #require(try await store.delete(secret, at: at))
            #expect(change.kind == .deleted)
            #expect(change.changeSeq == 2)
            #expect(change.message.body == "")
            #expect(change.message.deletedAt == at.truncatedToMillis)
            #expect(change.message.seq == 2)
            #expect(change.message.mentions == [])
            #expect(change.message.reactions == [])
            #expect(change.message.senderID == alice.id)

            let page = try await store.messages(conversationID: group.id, cursor: .after(0), limit: 10)
            #expect(page.messages.map(\.seq) == [1, 2, 3], "no gap where the deleted message was")
            #expect(page.messages.map(\.body) == ["before", "", "after"])
            #expect(page.messages[1].deletedAt == at.truncatedToMillis)
            #expect(page.messages[1].reactions == [])
            #expect(try await store.mentionCount(of: bob, in: group) == 0, "a deleted mention is not unread")

            #expect(try await store.delete(secret, at: .now) == nil, "already deleted: nothing changes")
            #expect(try await store.current(secret)?.deletedAt == at.truncatedToMillis, "the first deletion's time stays")
            let conversation = try #require(try await store.conversation(id: group.id))
            #expect(conversation.changeSeq == 2)
            #expect(conversation.lastSeq == 3)
            await expectParleyError("message_not_found") { try await store.deleteMessage(conversationID: group.id, messageID: UUID(), at: .now) }
        }
    }

    @Test("a deleted message's text is gone from the stored row, not just hidden", arguments: StoreFactory.all)
    func deletedTextErased(factory: StoreFactory) async throws {
        try await factory.withRawSQL { store, sql in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let group = try await store.makeGroup(owner: alice, members: [bob])
            let secret = try await store.post("my password is hunter2, @bob", from: alice, to: group).message
            _ = try #require(try await store.react("🙈", to: secret, by: bob))
            let row = "SELECT body FROM messages WHERE id = '\(secret.id.lowercased)'"
            #expect(try await sql(row) == [["my password is hunter2, @bob"]], "the query reads the message's row")

            _ = try #require(try await store.delete(secret))
            #expect(try await sql(row) == [[""]])
            #expect(try await sql("SELECT CAST(COUNT(*) AS TEXT) FROM messages WHERE body LIKE '%hunter2%'") == [["0"]])
            #expect(try await sql("SELECT CAST(COUNT(*) AS TEXT) FROM reactions") == [["0"]])
            #expect(try await sql("SELECT CAST(COUNT(*) AS TEXT) FROM mentions") == [["0"]])
        }
    }

    // MARK: Reactions

    @Test(
        "reactions: adding and removing are idempotent; one summary per emoji in first-use order, everywhere the message shows",
        arguments: StoreFactory.all)
    func reactions(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let carol = try await store.makeUser("carol")
            let group = try await store.makeGroup(owner: alice, members: [bob, carol])
            let message = try await store.post("lunch?", from: alice, to: group).message

            let added = try #require(try await store.react("👍", to: message, by: bob))
            #expect(added.kind == .reactions)
            #expect(added.changeSeq == 1)
            #expect(added.message.reactions == [ReactionSummary(emoji: "👍", count: 1, userIDs: [bob.id])])
            #expect(try await store.react("👍", to: message, by: bob) == nil, "the same reaction again changes nothing")
            _ = try #require(try await store.react("🎉", to: message, by: carol))
            _ = try #require(try await store.react("👍", to: message, by: carol))
            _ = try #require(try await store.react("👍", to: message, by: alice))

            let expected = [
                ReactionSummary(emoji: "👍", count: 3, userIDs: [bob.id, carol.id, alice.id]),
                ReactionSummary(emoji: "🎉", count: 1, userIDs: [carol.id]),
            ]
            #expect(try await store.current(message)?.reactions == expected)
            #expect(try await store.messages(conversationID: group.id, cursor: .latest, limit: 10).messages.last?.reactions == expected)
            #expect(try await store.conversation(id: group.id)?.lastMessage?.reactions == expected)
            #expect(try await store.conversations(for: bob.id, limit: 10).first?.lastMessage?.reactions == expected)

            let removed = try #require(try await store.react("👍", to: message, by: carol, present: false))
            #expect(removed.kind == .reactions)
            #expect(
                removed.message.reactions == [
                    ReactionSummary(emoji: "👍", count: 2, userIDs: [bob.id, alice.id]),
                    ReactionSummary(emoji: "🎉", count: 1, userIDs: [carol.id]),
                ])
            #expect(try await store.react("👍", to: message, by: carol, present: false) == nil, "removing it again changes nothing")
            #expect(try await store.react("😀", to: message, by: carol, present: false) == nil, "nor removing one never made")
            let last = try #require(try await store.react("🎉", to: message, by: carol, present: false))
            #expect(last.message.reactions == [ReactionSummary(emoji: "👍", count: 2, userIDs: [bob.id, alice.id])], "an emoji nobody uses is gone")
            #expect(try await store.conversation(id: group.id)?.changeSeq == 6, "one change number per change, none for no-ops")
        }
    }

    @Test("reactions are refused beyond the distinct-emoji limit, on deleted messages and on unknown ones", arguments: StoreFactory.all)
    func reactionRefusals(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let group = try await store.makeGroup(owner: alice, members: [bob])
            let message = try await store.post("vote", from: alice, to: group).message
            _ = try #require(try await store.react("👍", to: message, by: alice, maxDistinct: 2))
            _ = try #require(try await store.react("👎", to: message, by: bob, maxDistinct: 2))

            await expectParleyError("too_many_reactions") { try await store.react("🤷", to: message, by: alice, maxDistinct: 2) }
            let more = try #require(try await store.react("👍", to: message, by: bob, maxDistinct: 2), "an emoji already there can still be added")
            #expect(more.message.reactions.map(\.emoji) == ["👍", "👎"])
            #expect(more.message.reactions.map(\.count) == [2, 1])
            #expect(try await store.conversation(id: group.id)?.changeSeq == 3)

            _ = try #require(try await store.delete(message))
            await expectParleyError("message_deleted") { try await store.react("👍", to: message, by: alice) }
            await expectParleyError("message_deleted") { try await store.react("👍", to: message, by: alice, present: false) }
            await expectParleyError("message_not_found") {
                try await store.setReaction(
                    "👍", present: true, conversationID: group.id, messageID: UUID(), userID: alice.id, maxDistinct: 20, at: .now)
            }
            #expect(try await store.conversation(id: group.id)?.changeSeq == 4, "refusals take no change number")
        }
    }

    @Test("a reaction lists its first 20 users, earliest first, and counts them all", arguments: StoreFactory.all)
    func reactionUserList(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            var fans: [User] = []
            for i in 1...22 { fans.append(try await store.makeUser("fan\(i)")) }
            let group = try await store.makeGroup(owner: alice, members: fans)
            let message = try await store.post("party", from: alice, to: group).message
            for fan in fans { _ = try #require(try await store.react("🎉", to: message, by: fan)) }
            #expect(try await store.current(message)?.reactions == [ReactionSummary(emoji: "🎉", count: 22, userIDs: fans.prefix(20).map(\.id))])
        }
    }

    @Test("concurrent reactions each take their own change number: 1…N, no gap, none lost", arguments: StoreFactory.all)
    func concurrentReactions(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            var users: [User] = []
            for i in 1...12 { users.append(try await store.makeUser("user\(i)")) }
            let group = try await store.makeGroup(owner: alice, members: users)
            let message = try await store.post("react!", from: alice, to: group).message
            let reactors = users
            let changeSeqs = try await withThrowingTaskGroup(of: Int64.self) { tasks in
                for (i, user) in reactors.enumerated() {
                    tasks.addTask {
                        let change = try await store.react(i.isMultiple(of: 2) ? "👍" : "❤️", to: message, by: user)
                        return try #require(change).changeSeq
                    }
                }
                return try await tasks.reduce(into: []) { $0.append($1) }
            }
            #expect(Set(changeSeqs) == Set(1...12))
            #expect(try await store.conversation(id: group.id)?.changeSeq == 12)
            #expect(try await store.current(message)?.reactions.map(\.count).reduce(0, +) == 12)
        }
    }

    // MARK: Replies

    @Test("a reply quotes the message it answers, and the quote follows that message's edits and deletion", arguments: StoreFactory.all)
    func replies(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let group = try await store.makeGroup(owner: alice, members: [bob])
            let question = try await store.post("Where is the release checklist?", from: alice, to: group).message
            let answer = try await store.post("In the wiki", from: bob, to: group, replyTo: question.id).message
            #expect(answer.replyTo == MessageReference(id: question.id, seq: 1, senderID: alice.id, preview: "Where is the release checklist?"))
            #expect(try await store.current(answer) == answer, "reads back as it was sent")
            #expect(try await store.current(question)?.replyTo == nil)

            _ = try #require(try await store.edit(question, to: "Where is the deploy checklist?", by: alice))
            #expect(try await store.current(answer)?.replyTo?.preview == "Where is the deploy checklist?")
            let page = try await store.messages(conversationID: group.id, cursor: .latest, limit: 10)
            #expect(page.messages.last?.replyTo?.preview == "Where is the deploy checklist?")
            #expect(try await store.conversation(id: group.id)?.lastMessage?.replyTo?.preview == "Where is the deploy checklist?")

            _ = try #require(try await store.delete(question))
            #expect(
                try await store.current(answer)?.replyTo == MessageReference(id: question.id, seq: 1, senderID: alice.id, preview: ""),
                "a deleted message is quoted with an empty preview")
            #expect(try await store.current(answer)?.body == "In the wiki", "the reply itself is untouched")

            let essay = try await store.post(String(repeating: "ü", count: 150), from: alice, to: group).message
            let comment = try await store.post("tl;dr", from: bob, to: group, replyTo: essay.id).message
            #expect(comment.replyTo?.preview == String(repeating: "ü", count: 140), "the preview is the first 140 characters")
            #expect(try await store.current(comment)?.replyTo?.preview == String(repeating: "ü", count: 140))
        }
    }

    @Test("a reply to a message of another conversation, or to no message, is refused and writes nothing", arguments: StoreFactory.all)
    func invalidReply(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let team = try await store.makeGroup(owner: alice, members: [bob])
            let other = try await store.makeGroup(owner: bob, members: [alice], name: "Other")
            let first = try await store.post("first", from: alice, to: team).message
            let foreign = try await store.post("foreign", from: bob, to: other).message
            try await store.clearOutbox()

            let outcomes = try await store.appendBatch([
                SendRequest(conversationID: team.id, senderID: alice.id, clientMsgID: "r1", body: "re: foreign", replyToID: foreign.id),
                SendRequest(conversationID: team.id, senderID: alice.id, clientMsgID: "r2", body: "re: nothing", replyToID: UUID()),
                SendRequest(conversationID: team.id, senderID: bob.id, clientMsgID: "r3", body: "re: first", replyToID: first.id),
            ])
            #expect(outcomes.count == 3)
            #expect(outcomes[0].failureCode == "invalid_reply")
            #expect(outcomes[1].failureCode == "invalid_reply")
            #expect(try outcomes[2].get().message.seq == 2, "refused replies take no seq")
            #expect(try outcomes[2].get().message.replyTo?.id == first.id)
            await expectParleyError("invalid_reply") { try await store.post("again", from: alice, to: team, replyTo: foreign.id) }

            let page = try await store.messages(conversationID: team.id, cursor: .after(0), limit: 10)
            #expect(page.messages.map(\.body) == ["first", "re: first"])
            let conversation = try #require(try await store.conversation(id: team.id))
            #expect(conversation.lastSeq == 2)
            #expect(conversation.member(alice.id)?.readSeq == 1, "a refused send moves no watermark")
            #expect(try await store.pendingEvents(limit: 10).map(\.type) == ["message.created"], "only the accepted reply has an event")
            #expect(try await store.conversation(id: other.id)?.lastSeq == 1)
        }
    }

    // MARK: Mentions

    @Test("@username mentions of members resolve in order; others, unknown names and e-mail addresses do not", arguments: StoreFactory.all)
    func mentions(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let carol = try await store.makeUser("carol")
            let dave = try await store.makeUser("dave")
            let group = try await store.makeGroup(owner: alice, members: [bob, carol])
            _ = try await store.makeGroup(owner: dave, members: [alice], name: "Dave's")

            let message = try await store.post(
                "@Carol and @bob: mail bob@example.com, ask @dave or @nobody. Thanks @carol!", from: alice, to: group
            ).message
            #expect(message.mentions == [carol.id, bob.id], "members only, in order of first appearance, each once")
            #expect(try await store.current(message)?.mentions == [carol.id, bob.id])
            let reply = try await store.post("thanks @alice-", from: bob, to: group).message
            #expect(reply.mentions == [alice.id], "a trailing dash is not part of the name")
            let none = try await store.post("write to carol@example.com", from: bob, to: group).message
            #expect(none.mentions == [])
        }
    }

    @Test("unread mentions count until read; edits re-resolve them and deletion removes them", arguments: StoreFactory.all)
    func mentionCount(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let carol = try await store.makeUser("carol")
            let group = try await store.makeGroup(owner: alice, members: [bob, carol])
            let ask = try await store.post("@bob can you look?", from: alice, to: group).message
            let standup = try await store.post("@bob @carol standup", from: alice, to: group).message
            try await store.post("note to self @alice", from: alice, to: group)
            #expect(try await store.mentionCount(of: bob, in: group) == 2)
            #expect(try await store.mentionCount(of: carol, in: group) == 1)
            #expect(try await store.mentionCount(of: alice, in: group) == 0, "a mention in one's own (read) message is not unread")

            _ = try await store.advanceWatermark(.read, conversationID: group.id, userID: bob.id, to: 1)
            #expect(try await store.mentionCount(of: bob, in: group) == 1, "a read mention no longer counts")

            let edited = try #require(try await store.edit(standup, to: "@carol standup", by: alice))
            #expect(edited.message.mentions == [carol.id])
            #expect(try await store.mentionCount(of: bob, in: group) == 0, "the edit dropped bob's mention")
            let moved = try #require(try await store.edit(ask, to: "@carol can you look?", by: alice))
            #expect(moved.message.mentions == [carol.id])
            #expect(try await store.mentionCount(of: carol, in: group) == 2)

            _ = try #require(try await store.delete(standup))
            #expect(try await store.mentionCount(of: carol, in: group) == 1)
            _ = try await store.advanceWatermark(.read, conversationID: group.id, userID: carol.id, to: 3)
            #expect(try await store.mentionCount(of: carol, in: group) == 0)
        }
    }

    // MARK: Changes for sync

    @Test("changes(): the messages up to maxSeq changed after a cursor, in change order, each once with its latest kind", arguments: StoreFactory.all)
    func changes(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let group = try await store.makeGroup(owner: alice, members: [bob])
            var sent: [Message] = []
            for i in 1...5 { sent.append(try await store.post("m\(i)", from: alice, to: group).message) }
            _ = try #require(try await store.edit(sent[0], to: "m1 edited", by: alice))  // 1
            _ = try #require(try await store.react("👍", to: sent[1], by: bob))  // 2
            _ = try #require(try await store.edit(sent[2], to: "m3 edited", by: alice))  // 3
            _ = try #require(try await store.react("👍", to: sent[0], by: bob))  // 4
            _ = try #require(try await store.delete(sent[1]))  // 5
            let sixth = try await store.post("m6", from: alice, to: group).message
            _ = try #require(try await store.edit(sixth, to: "m6 edited", by: alice))  // 6

            let page = try await store.changes(conversationID: group.id, after: 0, maxSeq: 5, limit: 10)
            #expect(page.changes.map { $0.message.seq } == [3, 1, 2], "by latest change; m6 is above maxSeq")
            #expect(page.changes.map { $0.kind } == [.edited, .reactions, .deleted])
            #expect(page.changes.map { $0.message.changeSeq } == [3, 4, 5])
            #expect(!page.hasMore)
            #expect(page.conversationChangeSeq == 6)
            #expect(page.nextCursor == 6)
            for change in page.changes {
                #expect(try await store.current(change.message) == change.message, "each message in its current state")
            }
            #expect(page.changes[1].message.body == "m1 edited")
            #expect(page.changes[1].message.reactions.map(\.emoji) == ["👍"])
            #expect(page.changes[2].message.body == "")

            #expect(try await store.changes(conversationID: group.id, after: 3, maxSeq: 5, limit: 10).changes.map { $0.message.seq } == [1, 2])
            #expect(try await store.changes(conversationID: group.id, after: 0, maxSeq: 6, limit: 10).changes.map { $0.message.seq } == [3, 1, 2, 6])
            let upToDate = try await store.changes(conversationID: group.id, after: 6, maxSeq: 6, limit: 10)
            #expect(upToDate.changes.isEmpty)
            #expect(!upToDate.hasMore)
            #expect(upToDate.nextCursor == 6)
            await expectParleyError("conversation_not_found") {
                try await store.changes(conversationID: UUID(), after: 0, maxSeq: 10, limit: 10)
            }
        }
    }

    @Test("changes() pages with a small limit: hasMore and nextCursor lead through every change exactly once", arguments: StoreFactory.all)
    func changesPaging(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let group = try await store.makeGroup(owner: alice, members: [bob])
            var sent: [Message] = []
            for i in 1...10 { sent.append(try await store.post("m\(i)", from: alice, to: group).message) }
            for message in sent { _ = try #require(try await store.react("👀", to: message, by: bob)) }  // 1…10
            _ = try #require(try await store.edit(sent[0], to: "m1 edited", by: alice))  // 11: m1 moves to the end

            var cursor: Int64 = 0
            var pages: [[Int64]] = []
            var hasMore = true
            while hasMore, pages.count < 10 {
                let page = try await store.changes(conversationID: group.id, after: cursor, maxSeq: 10, limit: 4)
                #expect(page.conversationChangeSeq == 11)
                pages.append(page.changes.map { $0.message.seq })
                hasMore = page.hasMore
                cursor = page.nextCursor
            }
            #expect(pages == [[2, 3, 4, 5], [6, 7, 8, 9], [10, 1]])
            #expect(cursor == 11, "after the last page the cursor is the conversation's change number")
            let last = try await store.changes(conversationID: group.id, after: 9, maxSeq: 10, limit: 4)
            #expect(last.changes.map { $0.kind } == [.reactions, .edited])
        }
    }

    // MARK: Search

    @Test("search: words, any case, prefixes and phrases, in the caller's conversations only", arguments: StoreFactory.all)
    func searchMatching(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let carol = try await store.makeUser("carol")
            let team = try await store.makeGroup(owner: alice, members: [bob])
            let side = try await store.makeGroup(owner: alice, members: [carol], name: "Side")
            let secret = try await store.makeGroup(owner: carol, name: "Secret")
            let a = try await store.post("We deploy on Friday", from: alice, to: team).message.id
            let b = try await store.post("The deployment went well", from: bob, to: team).message.id
            let c = try await store.post("Release candidate is ready", from: alice, to: team).message.id
            let d = try await store.post("candidate for release notes", from: bob, to: team).message.id
            let e = try await store.post("deploy the docs too", from: carol, to: side).message.id
            let f = try await store.post("deploy the secret plan", from: carol, to: secret).message.id
            func ids(_ query: String, as user: User) async throws -> Set<UUID> {
                Set(try await store.search(query, as: user).results.map(\.message.id))
            }

            #expect(try await ids("deploy", as: alice) == [a, e], "a word, not words it begins")
            #expect(try await ids("DePloY", as: alice) == [a, e], "case does not matter")
            #expect(try await ids("deplo*", as: alice) == [a, b, e], "a prefix finds deploy and deployment")
            #expect(try await ids("\"release candidate\"", as: alice) == [c], "a phrase matches its words in that order")
            #expect(try await ids("release candidate", as: alice) == [c, d], "separate words match in any order")
            #expect(try await ids("deploy friday", as: alice) == [a], "every word must match")
            #expect(try await ids("nowhere", as: alice) == [])
            #expect(try await ids("deploy", as: bob) == [a])
            #expect(try await ids("deploy", as: carol) == [e, f])
            let hit = try #require(try await store.search("friday", as: alice).results.first)
            #expect(try await store.current(hit.message) == hit.message, "a result is the message as it reads")
        }
    }

    @Test("search: conversation filter, before, limit with hasMore; a member who left no longer finds that conversation", arguments: StoreFactory.all)
    func searchScope(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let team = try await store.makeGroup(owner: alice, members: [bob])
            let side = try await store.makeGroup(owner: bob, members: [alice], name: "Side")
            let base = Date.now.addingTimeInterval(-60)
            var notes: [Message] = []
            for i in 0..<4 {
                notes.append(try await store.post("meeting note \(i)", from: alice, to: team, now: base.addingTimeInterval(Double(i))).message)
            }
            let sideNote = try await store.post("meeting note side", from: bob, to: side, now: base.addingTimeInterval(10)).message

            #expect(try await store.search("meeting", as: alice, in: side).results.map(\.message.id) == [sideNote.id])
            let older = try await store.search("meeting", as: alice, in: team, before: notes[2].id)
            #expect(older.results.map(\.message.id) == [notes[1].id, notes[0].id], "only older than the given message, newest first")
            #expect(!older.hasMore)

            let firstPage = try await store.search("meeting", as: alice, limit: 2)
            #expect(firstPage.results.map(\.message.id) == [sideNote.id, notes[3].id], "equally good matches: newest first")
            #expect(firstPage.hasMore)
            let everything = try await store.search("meeting", as: alice, limit: 5)
            #expect(everything.results.count == 5)
            #expect(!everything.hasMore)

            try await store.removeMember(conversationID: side.id, userID: alice.id, now: .now)
            #expect(Set(try await store.search("meeting", as: alice).results.map(\.message.id)) == Set(notes.map(\.id)))
            #expect(try await store.search("meeting", as: alice, in: side).results.isEmpty)
            #expect(try await store.search("side", as: bob).results.map(\.message.id) == [sideNote.id], "the remaining member still finds it")
        }
    }

    @Test("search ranks a better match first, even when it is older", arguments: StoreFactory.all)
    func searchRanking(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let group = try await store.makeGroup(owner: alice)
            let base = Date.now.addingTimeInterval(-60)
            let strong = try await store.post("rollback rollback rollback", from: alice, to: group, now: base).message
            let weak = try await store.post(
                "we talked about lunch plans, the weather, the roadmap and maybe a rollback at some point later",
                from: alice, to: group, now: base.addingTimeInterval(1)
            ).message
            #expect(try await store.search("rollback", as: alice).results.map(\.message.id) == [strong.id, weak.id])
        }
    }

    @Test("search finds edited messages by their new words only, and deleted messages not at all", arguments: StoreFactory.all)
    func searchFollowsChanges(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let group = try await store.makeGroup(owner: alice, members: [bob])
            let plan = try await store.post("deploy on Friday", from: alice, to: group).message
            let hotfix = try await store.post("deploy the hotfix", from: bob, to: group).message

            _ = try #require(try await store.edit(plan, to: "ship on Monday", by: alice))
            #expect(try await store.search("friday", as: alice).results.isEmpty, "the old words are no longer found")
            let hit = try #require(try await store.search("monday", as: alice).results.first)
            #expect(hit.message.id == plan.id)
            #expect(hit.message.body == "ship on Monday")
            #expect(hit.message.editedAt != nil)
            #expect(try await store.search("deploy", as: alice).results.map(\.message.id) == [hotfix.id])

            _ = try #require(try await store.delete(hotfix))
            #expect(try await store.search("deploy", as: alice).results.isEmpty)
            #expect(try await store.search("hotfix", as: bob).results.isEmpty)
        }
    }

    @Test("the highlight marks the match and escapes HTML in the body", arguments: StoreFactory.all)
    func searchHighlight(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let group = try await store.makeGroup(owner: alice)
            try await store.post("Tom & Jerry: 1 < 2, so deploy <b>now</b>", from: alice, to: group)
            let highlight = try #require(try await store.search("deploy", as: alice).results.first?.highlight)
            #expect(highlight.contains("<mark>deploy</mark>"))
            #expect(highlight.contains("&amp;"))
            #expect(highlight.contains("1 &lt; 2"))
            #expect(!highlight.contains("<b>"), "markup in a body never reaches the highlight as markup")
            #expect(!highlight.contains(" < "))
        }
    }

    // MARK: Events and counters

    @Test("edits, deletions and reaction changes write their events in order, with the message's seq; no-ops write none", arguments: StoreFactory.all)
    func outboxEvents(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let group = try await store.makeGroup(owner: alice, members: [bob])
            var sent: [Message] = []
            for i in 1...6 { sent.append(try await store.post("m\(i)", from: alice, to: group).message) }
            let target = sent[4]  // seq 5: never equal to one of the change numbers below
            try await store.clearOutbox()
            let base = Date.now.addingTimeInterval(10)
            let times = (0..<4).map { base.addingTimeInterval(Double($0)) }

            _ = try #require(try await store.edit(target, to: "m5 edited", by: alice, at: times[0]))
            #expect(try await store.edit(target, to: "m5 edited", by: alice) == nil)
            _ = try #require(try await store.react("👍", to: target, by: bob, at: times[1]))
            #expect(try await store.react("👍", to: target, by: bob) == nil)
            _ = try #require(try await store.react("👍", to: target, by: bob, present: false, at: times[2]))
            #expect(try await store.react("👍", to: target, by: bob, present: false) == nil)
            _ = try #require(try await store.delete(target, at: times[3]))
            #expect(try await store.delete(target) == nil)

            let events = try await store.pendingEvents(limit: 100)
            #expect(events.map(\.type) == ["message.edited", "reaction.added", "reaction.removed", "message.deleted"])
            #expect(events.map(\.position) == events.map(\.position).sorted())
            let json = try events.map(envelope)
            for (index, (event, envelope)) in zip(events, json).enumerated() {
                #expect(event.topic == .messages)
                #expect(event.key == group.id.lowercased)
                #expect(envelope["type"] as? String == event.type)
                #expect(envelope["conversationId"] as? String == group.id.lowercased)
                #expect((envelope["seq"] as? NSNumber)?.int64Value == 5, "the envelope's seq is the message's seq")
                #expect(envelope["node"] as? String == "node-a")
                #expect(envelope["occurredAt"] as? String == times[index].truncatedToMillis.formatted(WireJSON.dateStyle))
                let data = try #require(envelope["data"] as? [String: Any])
                let message = try #require(data["message"] as? [String: Any])
                #expect(message["id"] as? String == target.id.lowercased)
                #expect((message["seq"] as? NSNumber)?.int64Value == 5)
            }
            func payload(_ index: Int) throws -> [String: Any] { try #require(json[index]["data"] as? [String: Any]) }
            func messageJSON(_ index: Int) throws -> [String: Any] { try #require(try payload(index)["message"] as? [String: Any]) }

            #expect(try messageJSON(0)["body"] as? String == "m5 edited")
            #expect(try messageJSON(0)["editedAt"] as? String == times[0].truncatedToMillis.formatted(WireJSON.dateStyle))
            #expect(try payload(1)["emoji"] as? String == "👍")
            #expect(try payload(1)["userId"] as? String == bob.id.lowercased)
            let reactions = try #require(try messageJSON(1)["reactions"] as? [[String: Any]])
            #expect(reactions.count == 1)
            #expect(reactions.first?["emoji"] as? String == "👍")
            #expect((reactions.first?["count"] as? NSNumber)?.intValue == 1)
            #expect(reactions.first?["userIds"] as? [String] == [bob.id.lowercased])
            #expect(try payload(2)["emoji"] as? String == "👍")
            #expect(try payload(2)["userId"] as? String == bob.id.lowercased)
            #expect((try messageJSON(2)["reactions"] as? [Any])?.isEmpty == true, "the message as it is after the removal")
            #expect(try messageJSON(3)["body"] as? String == "")
            #expect(try messageJSON(3)["deletedAt"] as? String == times[3].truncatedToMillis.formatted(WireJSON.dateStyle))
        }
    }

    @Test("edits, deletions and reactions move no watermark: lastSeq, readSeq and unread counts stay", arguments: StoreFactory.all)
    func unreadUnchanged(factory: StoreFactory) async throws {
        try await factory.with { store in
            let alice = try await store.makeUser("alice")
            let bob = try await store.makeUser("bob")
            let group = try await store.makeGroup(owner: alice, members: [bob])
            var sent: [Message] = []
            for i in 1...3 { sent.append(try await store.post("m\(i)", from: alice, to: group).message) }
            _ = try await store.advanceWatermark(.delivered, conversationID: group.id, userID: bob.id, to: 2)
            _ = try await store.advanceWatermark(.read, conversationID: group.id, userID: bob.id, to: 1)
            let before = try #require(try await store.conversation(id: group.id))
            #expect(before.unreadCount(for: bob.id) == 2)

            _ = try #require(try await store.edit(sent[1], to: "m2 edited", by: alice))
            _ = try #require(try await store.react("👍", to: sent[1], by: bob))
            _ = try #require(try await store.react("❤️", to: sent[2], by: alice))
            _ = try #require(try await store.react("👍", to: sent[1], by: bob, present: false))
            _ = try #require(try await store.delete(sent[2]))

            let after = try #require(try await store.conversation(id: group.id))
            #expect(after.changeSeq == 5)
            #expect(after.lastSeq == 3)
            #expect(after.members == before.members, "no watermark moved")
            #expect(after.member(bob.id)?.readSeq == 1)
            #expect(after.member(bob.id)?.deliveredSeq == 2)
            #expect(after.member(alice.id)?.readSeq == 3)
            #expect(after.unreadCount(for: bob.id) == 2)
            #expect(after.unreadCount(for: alice.id) == 0)
            let listed = try #require(try await store.conversations(for: bob.id, limit: 10).first)
            #expect(listed.unreadCount(for: bob.id) == 2)
            #expect(listed.lastMessage?.seq == 3)
            #expect(listed.lastMessage?.deletedAt != nil, "the last message reads as deleted")
        }
    }
}
