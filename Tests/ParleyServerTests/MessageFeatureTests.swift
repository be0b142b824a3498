import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import ParleyTestSupport
import Testing

/// Issue 12 through REST and the gateway: edits, deletions, reactions, replies, mentions, search,
/// and the change sequence that lets a client catch up on what changed while it was away.
@Suite("Message features: edit, delete, reactions, replies, mentions, search, change sync")
struct MessageFeatureTests {
    typealias Account = TestApp.Client.Account

    /// A well-formed message id that names no message.
    static let unknownMessageID = "0190f000-0000-7000-8000-000000000000"

    /// The `reactions` entry a member sees for `emoji` given by `users`, earliest first.
    static func reaction(_ emoji: String, _ users: [Account]) -> JSONValue {
        .object(["emoji": .string(emoji), "count": .number(Double(users.count)), "userIds": .array(users.map { .string($0.id) })])
    }

    // MARK: REST

    @Test("an edit returns the message with editedAt; members read the new body at the same seq; the same body again changes nothing")
    func edit() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let group = try await client.createGroup(alice, members: [bob])
            let sent = try await client.send(alice, group, "see you at 5")
            let original = sent.json["message"]
            #expect(
                original.keys == [
                    "id", "conversationId", "seq", "senderId", "body", "clientMsgId", "createdAt", "editedAt", "deletedAt", "replyTo", "mentions",
                    "reactions", "attachments",
                ])
            #expect(original["editedAt"].isNull)
            #expect(original["deletedAt"].isNull)
            #expect(original["replyTo"].isNull)
            #expect(original["mentions"] == .array([]))
            #expect(original["reactions"] == .array([]))
            let id = try #require(original["id"].string)
            let bobBefore = try await client.view(bob, group)

            let edited = try await client.edit(alice, group, id, to: "see you at 6")
            #expect(edited.status == .ok)
            let message = edited.json["message"]
            #expect(message["id"].string == id)
            #expect(message["seq"].int == 1)
            #expect(message["body"].string == "see you at 6")
            #expect(message["createdAt"] == original["createdAt"])
            #expect(message["deletedAt"].isNull)
            let editedAt = try #require(message["editedAt"].string)

            let history = try await client.history(bob, group)
            #expect(history == .array([message]), "bob reads the edited message, and only it")

            let bobAfter = try await client.view(bob, group)
            #expect(bobAfter["changeSeq"].int == 1)
            #expect(bobAfter["lastSeq"] == bobBefore["lastSeq"], "an edit is not a new message")
            #expect(bobAfter["unreadCount"] == bobBefore["unreadCount"])
            #expect(bobAfter["readSeq"] == bobBefore["readSeq"])

            let again = try await client.edit(alice, group, id, to: "see you at 6")
            #expect(again.status == .ok)
            #expect(again.json["message"]["editedAt"].string == editedAt, "the same body again is not an edit")
            #expect(try await client.view(bob, group)["changeSeq"].int == 1)
        }
    }

    @Test("a delete is 204; the message keeps its seq with an empty body and deletedAt; deleting again changes nothing")
    func delete() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let group = try await client.createGroup(alice, members: [bob])
            _ = try await client.send(alice, group, "first")
            let id = try #require(try await client.send(alice, group, "wrong chat, sorry @bob").json["message"]["id"].string)
            // Alice sends the third too: a send moves the sender's own read watermark, which would read bob's mention.
            _ = try await client.send(alice, group, "third")
            #expect(try await client.react(bob, group, id, "👍").status == .noContent)
            #expect(try await client.listed(bob, group)["mentionCount"].int == 1)
            let bobBefore = try await client.view(bob, group)

            let deleted = try await client.deleteMessage(alice, group, id)
            #expect(deleted.status == .noContent)
            #expect(deleted.body.readableBytes == 0)

            let history = try await client.history(bob, group)
            #expect(history.array.compactMap { $0["seq"].int } == [1, 2, 3], "the deleted message keeps its place")
            #expect(history.array.compactMap { $0["body"].string } == ["first", "", "third"])
            let gone = history[1]
            #expect(gone["id"].string == id)
            #expect(gone["senderId"].string == alice.id)
            let deletedAt = try #require(gone["deletedAt"].string)
            #expect(gone["mentions"] == .array([]))
            #expect(gone["reactions"] == .array([]))
            #expect(history[0]["deletedAt"].isNull && history[2]["deletedAt"].isNull)

            let bobAfter = try await client.view(bob, group)
            #expect(bobAfter["changeSeq"].int == 2, "the reaction, then the deletion")
            #expect(bobAfter["lastSeq"] == bobBefore["lastSeq"])
            #expect(bobAfter["unreadCount"] == bobBefore["unreadCount"])
            #expect(try await client.listed(bob, group)["mentionCount"].int == 0, "a deleted mention is no longer unread")

            let again = try await client.deleteMessage(alice, group, id)
            #expect(again.status == .noContent)
            #expect(try await client.view(bob, group)["changeSeq"].int == 2)
            #expect(try await client.history(bob, group)[1]["deletedAt"].string == deletedAt)

            // A deleted message can be neither edited nor reacted to.
            let revived = try await client.edit(alice, group, id, to: "back from the dead")
            #expect(revived.status == .conflict)
            #expect(revived.errorCode == "message_deleted")
            let reacted = try await client.react(bob, group, id, "🎉")
            #expect(reacted.status == .conflict)
            #expect(reacted.errorCode == "message_deleted")
            #expect(try await client.history(bob, group)[1] == gone)
        }
    }

    @Test("reactions: PUT and DELETE are idempotent 204s; one entry per emoji in the order first used, with count and who")
    func reactions() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let carol = try await client.register("carol")
            let group = try await client.createGroup(alice, members: [bob, carol])
            let id = try #require(try await client.send(alice, group, "ship it").json["message"]["id"].string)
            let carolBefore = try await client.view(carol, group)

            #expect(try await client.react(alice, group, id, "👍").status == .noContent)
            #expect(try await client.react(bob, group, id, "❤️").status == .noContent)
            #expect(try await client.react(bob, group, id, "👍").status == .noContent)
            #expect(try await client.react(carol, group, id, "❤").status == .noContent, "the text-style heart is the same reaction")
            #expect(try await client.react(alice, group, id, "👍").status == .noContent, "a repeat")
            var message = try await client.history(carol, group)[0]
            #expect(message["reactions"] == .array([Self.reaction("👍", [alice, bob]), Self.reaction("❤️", [bob, carol])]))
            #expect(try await client.view(carol, group)["changeSeq"].int == 4, "the repeat took no change number")

            #expect(try await client.react(bob, group, id, "👍", present: false).status == .noContent)
            #expect(try await client.react(bob, group, id, "👍", present: false).status == .noContent, "removing again")
            #expect(try await client.react(carol, group, id, "❤️", present: false).status == .noContent, "either spelling removes it")
            message = try await client.history(carol, group)[0]
            #expect(message["reactions"] == .array([Self.reaction("👍", [alice]), Self.reaction("❤️", [bob])]))
            #expect(message["body"].string == "ship it")
            #expect(message["editedAt"].isNull, "a reaction is not an edit")

            let carolAfter = try await client.view(carol, group)
            #expect(carolAfter["changeSeq"].int == 6)
            #expect(carolAfter["lastSeq"] == carolBefore["lastSeq"])
            #expect(carolAfter["unreadCount"] == carolBefore["unreadCount"])
            #expect(carolAfter["readSeq"] == carolBefore["readSeq"])
        }
    }

    // Reactions list one entry per emoji in the order each was first used: an emoji keeps its place
    // when the person who used it first takes their reaction back (chips do not jump around).
    @Test("an emoji keeps its place among the reactions when the member who first used it takes theirs back")
    func reactionOrderIsStable() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let carol = try await client.register("carol")
            let group = try await client.createGroup(alice, members: [bob, carol])
            let id = try #require(try await client.send(alice, group, "ship it").json["message"]["id"].string)
            #expect(try await client.react(alice, group, id, "👍").status == .noContent)
            #expect(try await client.react(bob, group, id, "❤️").status == .noContent)
            #expect(try await client.react(carol, group, id, "👍").status == .noContent)
            #expect(try await client.react(alice, group, id, "👍", present: false).status == .noContent)
            let message = try await client.history(bob, group)[0]
            #expect(message["reactions"] == .array([Self.reaction("👍", [carol]), Self.reaction("❤️", [bob])]))
        }
    }

    @Test("a message takes at most PARLEY_MAX_REACTIONS_PER_MESSAGE different emoji; more people can still use one already there")
    func tooManyReactions() async throws {
        try await TestApp.run(configure: { $0.limits.maxReactionsPerMessage = 2 }) { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let group = try await client.createGroup(alice, members: [bob])
            let id = try #require(try await client.send(alice, group, "vote").json["message"]["id"].string)
            #expect(try await client.react(alice, group, id, "👍").status == .noContent)
            #expect(try await client.react(bob, group, id, "👎").status == .noContent)
            let third = try await client.react(alice, group, id, "🎉")
            #expect(third.status == .conflict)
            #expect(third.errorCode == "too_many_reactions")
            #expect(try await client.react(bob, group, id, "👍").status == .noContent)
            let message = try await client.history(alice, group)[0]
            #expect(message["reactions"] == .array([Self.reaction("👍", [alice, bob]), Self.reaction("👎", [bob])]))
        }
    }

    @Test("a reply carries replyTo with the quoted message's current preview; an unknown replyToId is 400 invalid_reply")
    func replies() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let group = try await client.createGroup(alice, members: [bob])
            // 150 two-byte characters, then ten digits: the preview is the first 140 characters, not bytes.
            let long = String(repeating: "é", count: 150) + "0123456789"
            let original = try #require(try await client.send(alice, group, long).json["message"]["id"].string)

            let reply = try await client.reply(bob, group, "agreed", to: original)
            #expect(reply.status == .created)
            let replyTo = reply.json["message"]["replyTo"]
            #expect(replyTo.keys == ["id", "seq", "senderId", "preview"])
            #expect(replyTo["id"].string == original)
            #expect(replyTo["seq"].int == 1)
            #expect(replyTo["senderId"].string == alice.id)
            #expect(replyTo["preview"].string == String(repeating: "é", count: 140))
            #expect(try await client.history(alice, group)[1]["replyTo"] == replyTo)

            // The preview follows the quoted message as it reads now.
            #expect(try await client.edit(alice, group, original, to: "shorter now").status == .ok)
            #expect(try await client.history(bob, group)[1]["replyTo"]["preview"].string == "shorter now")
            #expect(try await client.deleteMessage(alice, group, original).status == .noContent)
            let afterDelete = try await client.history(bob, group)[1]["replyTo"]
            #expect(afterDelete["preview"].string == "")
            #expect(afterDelete["id"].string == original)

            let unknown = try await client.reply(bob, group, "to nothing", to: Self.unknownMessageID)
            #expect(unknown.status == .badRequest)
            #expect(unknown.errorCode == "invalid_reply")
            let malformed = try await client.request(
                .post, "/api/v1/conversations/\(group)/messages", token: bob.accessToken, json: #"{"body":"x","replyToId":"nope"}"#)
            #expect(malformed.status == .badRequest)
            #expect(try await client.history(bob, group).array.compactMap { $0["body"].string } == ["", "agreed"], "nothing else was sent")
        }
    }

    @Test("@mentions of members are listed on the message and counted as unread mentions until read; edits re-resolve them")
    func mentions() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let carol = try await client.register("carol")
            _ = try await client.register("dave")
            let group = try await client.createGroup(alice, members: [bob, carol])

            let first = try await client.send(alice, group, "hey @bob and @Carol, mail bob@example.com or ask @dave.")
            #expect(
                first.json["message"]["mentions"] == .array([.string(bob.id), .string(carol.id)]), "dave is not a member; an e-mail is not a mention")
            let second = try await client.send(alice, group, "@bob again")
            #expect(second.json["message"]["mentions"] == .array([.string(bob.id)]))
            _ = try await client.send(alice, group, "anyone?")  // not bob: his own send would move his read watermark

            #expect(try await client.listed(bob, group)["mentionCount"].int == 2)
            #expect(try await client.listed(carol, group)["mentionCount"].int == 1)
            #expect(try await client.listed(alice, group)["mentionCount"].int == 0)

            #expect(
                try await client.request(.post, "/api/v1/conversations/\(group)/read", token: bob.accessToken, json: #"{"seq":1}"#).status
                    == .noContent)
            #expect(try await client.listed(bob, group)["mentionCount"].int == 1)
            #expect(
                try await client.request(.post, "/api/v1/conversations/\(group)/read", token: bob.accessToken, json: #"{"seq":3}"#).status
                    == .noContent)
            #expect(try await client.listed(bob, group)["mentionCount"].int == 0)

            let secondID = try #require(second.json["message"]["id"].string)
            let edited = try await client.edit(alice, group, secondID, to: "@carol again, not @bob's job")
            #expect(edited.json["message"]["mentions"] == .array([.string(carol.id), .string(bob.id)]))
            let retargeted = try await client.edit(alice, group, secondID, to: "@carol again")
            #expect(retargeted.json["message"]["mentions"] == .array([.string(carol.id)]))
            #expect(try await client.history(carol, group)[1]["mentions"] == .array([.string(carol.id)]))
            #expect(try await client.listed(carol, group)["mentionCount"].int == 2)
            #expect(try await client.listed(bob, group)["mentionCount"].int == 0)
        }
    }

    @Test("search finds the caller's messages with <mark> highlights; terms, phrases and prefixes; edits re-indexed, deletions gone")
    func search() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let carol = try await client.register("carol")
            let team = try await client.createGroup(alice, members: [bob])
            let elsewhere = try await client.createGroup(carol, name: "Elsewhere")
            let tonight = try #require(try await client.send(alice, team, "Deploy the release tonight").json["message"]["id"].string)
            let lunch = try #require(try await client.send(bob, team, "lunch at noon?").json["message"]["id"].string)
            let markup = try #require(try await client.send(alice, team, "<b>deploy</b> & roll back").json["message"]["id"].string)
            let carols = try #require(try await client.send(carol, elsewhere, "deploy secrets to prod").json["message"]["id"].string)

            let found = try await client.search(alice, "deploy")
            #expect(found.status == .ok)
            #expect(found.json.keys == ["results", "hasMore"])
            #expect(found.json["hasMore"].bool == false)
            let results = found.json["results"].array
            #expect(Set(Self.ids(found)) == [tonight, markup], "carol's group is not searched")
            #expect(results.first?.keys == ["message", "highlight"])
            #expect(results.allSatisfy { $0["message"]["conversationId"].string == team })
            let highlights = Dictionary(
                results.map { ($0["message"]["id"].string ?? "", $0["highlight"].string ?? "") }, uniquingKeysWith: { first, _ in first })
            #expect(highlights[tonight]?.contains("<mark>Deploy</mark> the release tonight") == true)
            #expect(
                highlights[markup]?.contains("&lt;b&gt;<mark>deploy</mark>&lt;/b&gt; &amp; roll back") == true,
                "the body's own markup is escaped; only the match is marked")
            #expect(highlights[markup]?.contains("<b>") == false)

            #expect(Set(Self.ids(try await client.search(alice, "DEPLO*"))) == [tonight, markup], "prefix, any case")
            #expect(Self.ids(try await client.search(alice, #""release tonight""#)) == [tonight])
            #expect(Self.ids(try await client.search(alice, #""tonight release""#)).isEmpty, "a phrase keeps its order")
            #expect(Self.ids(try await client.search(alice, "deploy tonight")) == [tonight])
            #expect(Self.ids(try await client.search(alice, "deploy lunch")).isEmpty, "terms are ANDed")
            #expect(Self.ids(try await client.search(carol, "deploy")) == [carols])
            #expect(Self.ids(try await client.search(alice, "deploy", "&conversationId=\(team)")).count == 2)

            // An edit is re-indexed; a deleted message is never found.
            #expect(Self.ids(try await client.search(bob, "noon")) == [lunch])
            #expect(try await client.edit(bob, team, lunch, to: "lunch moved to one").status == .ok)
            #expect(Self.ids(try await client.search(bob, "noon")).isEmpty)
            let moved = try await client.search(bob, "moved")
            #expect(Self.ids(moved) == [lunch])
            #expect(moved.json["results"][0]["highlight"].string?.contains("<mark>moved</mark>") == true)
            #expect(moved.json["results"][0]["message"]["body"].string == "lunch moved to one")
            #expect(try await client.deleteMessage(alice, team, tonight).status == .noContent)
            #expect(Self.ids(try await client.search(alice, "tonight")).isEmpty)
            #expect(Self.ids(try await client.search(alice, "deploy")) == [markup])

            // Equal matches come newest (highest id) first; limit, hasMore and before page through them.
            // (Ids made in the same millisecond are ordered by their random bits, not by send order.)
            var rollouts: [String] = []
            for _ in 1...3 { rollouts.append(try #require(try await client.send(alice, team, "rollout plan").json["message"]["id"].string)) }
            let newestFirst = rollouts.sorted(by: >)
            let page = try await client.search(alice, "rollout", "&limit=2")
            #expect(Self.ids(page) == Array(newestFirst.prefix(2)))
            #expect(page.json["hasMore"].bool == true)
            let rest = try await client.search(alice, "rollout", "&limit=2&before=\(newestFirst[1])")
            #expect(Self.ids(rest) == [newestFirst[2]])
            #expect(rest.json["hasMore"].bool == false)
            let all = try await client.search(alice, "rollout", "&limit=3")
            #expect(Self.ids(all).count == 3)
            #expect(all.json["hasMore"].bool == false)
        }
    }

    // MARK: Gateway

    @Test("edits, deletions and reaction changes reach every socket of every member as updated frames, changeSeq one higher each")
    func liveUpdates() async throws {
        try await TestApp.run(.live) { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let carol = try await client.register("carol")
            let group = try await client.createGroup(alice, members: [bob])
            let carolsGroup = try await client.createGroup(alice, name: "Other", members: [carol])
            let id = try #require(try await client.send(alice, group, "draft").json["message"]["id"].string)

            let alicePhone = try await WSTestClient.ready(port: client.port, token: alice.accessToken)
            let aliceLaptop = try await WSTestClient.ready(port: client.port, token: alice.accessToken)
            let bobSocket = try await WSTestClient.ready(port: client.port, token: bob.accessToken)
            let carolSocket = try await WSTestClient.ready(port: client.port, token: carol.accessToken)

            let edited = try await client.edit(alice, group, id, to: "final")
            #expect(edited.status == .ok)
            #expect(try await client.react(bob, group, id, "👍").status == .noContent)
            #expect(try await client.react(bob, group, id, "👍").status == .noContent, "a repeat: no change, no frame")
            #expect(try await client.react(alice, group, id, "🎉").status == .noContent)
            #expect(try await client.react(bob, group, id, "👍", present: false).status == .noContent)
            #expect(try await client.edit(alice, group, id, to: "final").status == .ok, "the same body: no change, no frame")
            #expect(try await client.deleteMessage(alice, group, id).status == .noContent)
            #expect(try await client.deleteMessage(alice, group, id).status == .noContent, "already deleted: no change, no frame")

            for (name, socket) in [("alice's phone", alicePhone), ("alice's laptop", aliceLaptop), ("bob", bobSocket)] {
                var frames: [JSONValue] = []
                for _ in 0..<5 { frames.append(try await socket.next("updated")) }
                #expect(frames.map { $0["changeSeq"].int } == [1, 2, 3, 4, 5], "\(name): gapless, one per change")
                #expect(frames.map { $0["change"].string } == ["edited", "reactions", "reactions", "reactions", "deleted"], "\(name)")
                #expect(frames.allSatisfy { $0["message"]["id"].string == id && $0["message"]["conversationId"].string == group }, "\(name)")
                #expect(frames[0].keys == ["type", "change", "message", "changeSeq"], "\(name)")
                #expect(frames[0]["message"] == edited.json["message"], "\(name): the message as the editor got it")
                #expect(frames[1]["message"]["reactions"] == .array([Self.reaction("👍", [bob])]), "\(name)")
                #expect(frames[2]["message"]["reactions"] == .array([Self.reaction("👍", [bob]), Self.reaction("🎉", [alice])]), "\(name)")
                #expect(frames[3]["message"]["reactions"] == .array([Self.reaction("🎉", [alice])]), "\(name)")
                #expect(frames[3]["message"]["body"].string == "final", "\(name)")
                #expect(frames[4]["message"]["body"].string == "", "\(name)")
                #expect(frames[4]["message"]["deletedAt"].string != nil, "\(name)")
                #expect(frames[4]["message"]["reactions"] == .array([]), "\(name)")
            }
            // The repeats sent nothing: the next frame everyone gets is the message sent now.
            _ = try await client.send(bob, group, "after")
            for socket in [alicePhone, aliceLaptop, bobSocket] {
                #expect(try await socket.next("message")["message"]["body"].string == "after")
            }
            // Carol is not in the group: the first thing she hears is a message in her own.
            _ = try await client.send(alice, carolsGroup, "for carol")
            #expect(try await carolSocket.next("message")["message"]["body"].string == "for carol")

            let view = try await client.view(bob, group)
            #expect(view["changeSeq"].int == 5)
            #expect(view["lastSeq"].int == 2)
            for socket in [alicePhone, aliceLaptop, bobSocket, carolSocket] { await socket.close() }
        }
    }

    @Test("after 50 changes while offline, sync sends each changed message the client holds once, final, in change order, then new messages")
    func syncChanges() async throws {
        try await TestApp.run(.live) { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let group = try await client.createGroup(alice, members: [bob])

            // Bob holds messages 1…20 and the one change made while he was online.
            let online = try await WSTestClient.ready(port: client.port, token: bob.accessToken)
            var ids: [String] = []
            for seq in 1...20 { ids.append(try #require(try await client.send(alice, group, "message \(seq)").json["message"]["id"].string)) }
            var seqCursor = 0
            while seqCursor < 20 { seqCursor = try #require(try await online.next("message")["message"]["seq"].int) }
            #expect(try await client.edit(alice, group, ids[9], to: "message 10, corrected").status == .ok)
            let seen = try await online.next("updated")
            let changeCursor = try #require(seen["changeSeq"].int)
            #expect(changeCursor == 1)
            await online.close()

            // While he is away: ten new messages, then 50 changes spread over old and new ones.
            for seq in 21...30 { ids.append(try #require(try await client.send(alice, group, "message \(seq)").json["message"]["id"].string)) }
            let targets = [1, 2, 3, 5, 8, 13, 20, 22, 26, 30]
            let deletedLast: Set<Int> = [2, 13, 26]
            let emoji = ["👍", "❤️", "🎉"]
            var changeSeq = changeCursor
            var latest: [Int: (change: String, changeSeq: Int)] = [10: ("edited", 1)]
            var reacted: [Int: [String]] = [:]
            for round in 0..<5 {
                for (index, seq) in targets.enumerated() {
                    let change: String
                    if round == 4, deletedLast.contains(seq) {
                        #expect(try await client.deleteMessage(alice, group, ids[seq - 1]).status == .noContent, "delete \(seq)")
                        reacted[seq] = []
                        change = "deleted"
                    } else if (round + index) % 4 == 0 {
                        let reply = try await client.edit(alice, group, ids[seq - 1], to: "message \(seq), edit \(round)")
                        #expect(reply.status == .ok, "edit \(seq)")
                        change = "edited"
                    } else {
                        let chosen = emoji[(round + index) % 4 - 1]
                        let present = reacted[seq, default: []].contains(chosen)
                        let reply = try await client.react(alice, group, ids[seq - 1], chosen, present: !present)
                        #expect(reply.status == .noContent, "reaction \(chosen) on \(seq)")
                        if present { reacted[seq]?.removeAll { $0 == chosen } } else { reacted[seq, default: []].append(chosen) }
                        change = "reactions"
                    }
                    changeSeq += 1
                    latest[seq] = (change, changeSeq)
                }
            }
            #expect(changeSeq == 51)

            // Requests that change nothing take no change number.
            let withReaction = try #require(reacted.sorted { $0.key < $1.key }.first { !$0.value.isEmpty && !deletedLast.contains($0.key) })
            #expect(try await client.react(alice, group, ids[withReaction.key - 1], withReaction.value[0]).status == .noContent)
            #expect(try await client.react(alice, group, ids[0], "😀", present: false).status == .noContent)
            #expect(try await client.deleteMessage(alice, group, ids[1]).status == .noContent)
            #expect(try await client.edit(alice, group, ids[9], to: "message 10, corrected").status == .ok)
            let view = try await client.view(bob, group)
            #expect(view["changeSeq"].int == 51)
            #expect(view["lastSeq"].int == 30)

            // The final state, as members read it, agrees with what was done.
            let history = try await client.history(bob, group)
            #expect(history.array.count == 30)
            let finalState = Dictionary(history.array.map { ($0["seq"].int ?? 0, $0) }, uniquingKeysWith: { first, _ in first })
            for seq in deletedLast {
                #expect(finalState[seq]?["body"].string == "" && finalState[seq]?["deletedAt"].string != nil, "\(seq) deleted")
            }
            for (seq, emojis) in reacted {
                let shown = finalState[seq]?["reactions"].array.compactMap { $0["emoji"].string } ?? []
                #expect(Set(shown) == Set(emojis) && shown.count == emojis.count, "\(seq) reactions")
            }
            #expect(finalState[10]?["body"].string == "message 10, corrected")

            let socket = try await WSTestClient.ready(port: client.port, token: bob.accessToken)
            let reply = try await Self.sync(socket, group, seq: seqCursor, changes: changeCursor)
            let expected = latest.filter { $0.key <= seqCursor && $0.value.changeSeq > changeCursor }.sorted {
                $0.value.changeSeq < $1.value.changeSeq
            }
            let updated = reply.frames.prefix { $0["type"].string == "updated" }
            #expect(
                updated.compactMap { $0["message"]["seq"].int } == expected.map { $0.key }, "changed messages bob holds, once each, in change order")
            #expect(updated.compactMap { $0["changeSeq"].int } == expected.map { $0.value.changeSeq })
            #expect(updated.compactMap { $0["change"].string } == expected.map { $0.value.change }, "the kind of each one's latest change")
            for frame in updated {
                #expect(frame["message"] == finalState[frame["message"]["seq"].int ?? 0], "final state of \(frame["message"]["seq"])")
            }
            let messages = reply.frames.dropFirst(updated.count)
            #expect(messages.allSatisfy { $0["type"].string == "message" }, "then only message frames")
            #expect(messages.compactMap { $0["message"]["seq"].int } == Array(21...30))
            for frame in messages {
                #expect(frame["message"] == finalState[frame["message"]["seq"].int ?? 0], "final state of \(frame["message"]["seq"])")
            }
            #expect(reply.synced["conversationId"].string == group)
            #expect(reply.synced["hasMore"].bool == false)
            #expect(reply.synced["lastSeq"].int == 30)
            #expect(reply.synced["changeSeq"].int == 51)

            // With the cursors it was given, there is nothing new.
            let again = try await Self.sync(socket, group, seq: 30, changes: 51)
            #expect(again.frames.isEmpty)
            #expect(again.synced["hasMore"].bool == false)
            #expect(again.synced["lastSeq"].isNull)
            #expect(again.synced["changeSeq"].int == 51)
            // A sync without change cursors is as it always was.
            let plain = try await Self.sync(socket, group, seq: 30, changes: nil)
            #expect(plain.frames.isEmpty)
            #expect(plain.synced["changeSeq"].isNull)
            await socket.close()
        }
    }

    @Test("more changes than a sync page: updated frames come in pages with hasMore, and new messages only after the last")
    func syncChangePages() async throws {
        try await TestApp.run(.live, configure: { $0.gateway.syncPageSize = 10 }) { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let group = try await client.createGroup(alice, members: [bob])
            var ids: [String] = []
            for seq in 1...30 { ids.append(try #require(try await client.send(alice, group, "message \(seq)").json["message"]["id"].string)) }
            // Bob holds 1…30 and no changes. Then a reaction on each of 1…25 (changes 1…25), an edit
            // of 3 (change 26, which moves 3 to the end), and a new message.
            for seq in 1...25 { #expect(try await client.react(alice, group, ids[seq - 1], "👍").status == .noContent) }
            #expect(try await client.edit(alice, group, ids[2], to: "message 3, edited").status == .ok)
            _ = try await client.send(alice, group, "message 31")

            struct Page {
                var seqs: [Int]
                var changes: [String]
                var messages: [Int]
                var hasMore: Bool?
                var lastSeq: Int?
                var changeSeq: Int?
            }
            let socket = try await WSTestClient.ready(port: client.port, token: bob.accessToken)
            var pages: [Page] = []
            var changeCursor = 0
            repeat {
                let reply = try await Self.sync(socket, group, seq: 30, changes: changeCursor)
                let updated = reply.frames.filter { $0["type"].string == "updated" }
                pages.append(
                    Page(
                        seqs: updated.compactMap { $0["message"]["seq"].int }, changes: updated.compactMap { $0["change"].string },
                        messages: reply.frames.filter { $0["type"].string == "message" }.compactMap { $0["message"]["seq"].int },
                        hasMore: reply.synced["hasMore"].bool, lastSeq: reply.synced["lastSeq"].int, changeSeq: reply.synced["changeSeq"].int))
                changeCursor = try #require(reply.synced["changeSeq"].int)
            } while pages.last?.hasMore == true && pages.count < 5
            #expect(pages.map(\.hasMore) == [true, true, false])
            let expectedSeqs: [[Int]] = [[1, 2] + Array(4...11), Array(12...21), [22, 23, 24, 25, 3]]
            #expect(pages.map(\.seqs) == expectedSeqs, "each changed message once, in change order, ten a page")
            #expect(pages.last?.changes == ["reactions", "reactions", "reactions", "reactions", "edited"])
            #expect(pages.map(\.changeSeq) == [11, 21, 26], "the last change sent, then the conversation's")
            #expect(pages.map(\.messages) == [[], [], [31]], "new messages only once the changes are complete")
            #expect(pages.map(\.lastSeq) == [nil, nil, 31])
            await socket.close()
        }
    }

    // MARK: Authorization

    struct Endpoint: Sendable, CustomTestStringConvertible {
        var method: HTTPRequest.Method
        /// `{id}`: the conversation; `{message}`: a message in it.
        var path: String
        var body: String?

        var testDescription: String { "\(method) \(path)" }

        func resolved(_ text: String, conversation: String, message: String) -> String {
            text.replacingOccurrences(of: "{id}", with: conversation).replacingOccurrences(of: "{message}", with: message)
        }
    }

    static let endpoints: [Endpoint] = [
        .init(method: .patch, path: "/api/v1/conversations/{id}/messages/{message}", body: #"{"body":"hijacked"}"#),
        .init(method: .delete, path: "/api/v1/conversations/{id}/messages/{message}"),
        .init(method: .put, path: "/api/v1/conversations/{id}/messages/{message}/reactions/\(percentEncoded("👍"))"),
        .init(method: .delete, path: "/api/v1/conversations/{id}/messages/{message}/reactions/\(percentEncoded("👍"))"),
        .init(method: .post, path: "/api/v1/conversations/{id}/messages", body: #"{"body":"intrusion","replyToId":"{message}"}"#),
        .init(method: .get, path: "/api/v1/search?q=classified&conversationId={id}"),
    ]

    @Test("a non-member gets 404 conversation_not_found, no data, and changes nothing", arguments: endpoints)
    func nonMember(endpoint: Endpoint) async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let mallory = try await client.register("mallory")
            let group = try await client.createGroup(alice, name: "Secret", members: [bob])
            let id = try #require(try await client.send(alice, group, "classified").json["message"]["id"].string)
            let before = try await client.history(alice, group)

            let reply = try await client.request(
                endpoint.method, endpoint.resolved(endpoint.path, conversation: group, message: id), token: mallory.accessToken,
                json: endpoint.body.map { endpoint.resolved($0, conversation: group, message: id) })
            #expect(reply.status == .notFound)
            #expect(reply.errorCode == "conversation_not_found")
            #expect(reply.json.keys == ["error"])
            #expect(!reply.text.contains("classified") && !reply.text.contains("Secret") && !reply.text.contains(bob.id))

            #expect(try await client.history(alice, group) == before)
            let view = try await client.view(alice, group)
            #expect(view["changeSeq"].int == 0)
            #expect(view["lastSeq"].int == 1)
        }
    }

    @Test("without a valid token the new endpoints are 401", arguments: endpoints)
    func unauthenticated(endpoint: Endpoint) async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let group = try await client.createGroup(alice)
            let id = try #require(try await client.send(alice, group, "mine").json["message"]["id"].string)
            let before = try await client.history(alice, group)
            for token in [nil, "not-a-jwt"] {
                let reply = try await client.request(
                    endpoint.method, endpoint.resolved(endpoint.path, conversation: group, message: id), token: token,
                    json: endpoint.body.map { endpoint.resolved($0, conversation: group, message: id) })
                #expect(reply.status == .unauthorized, "\(token ?? "no token")")
                #expect(reply.errorCode != nil)
            }
            #expect(try await client.history(alice, group) == before)
        }
    }

    @Test("only the sender edits a message: anyone else, the group's owner included, gets 403 not_message_sender")
    func editOthers() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let group = try await client.createGroup(alice, members: [bob])
            let bobs = try #require(try await client.send(bob, group, "bob wrote this").json["message"]["id"].string)
            let alices = try #require(try await client.send(alice, group, "alice wrote this").json["message"]["id"].string)
            let before = try await client.history(alice, group)

            let byOwner = try await client.edit(alice, group, bobs, to: "rewritten by the owner")
            #expect(byOwner.status == .forbidden)
            #expect(byOwner.errorCode == "not_message_sender")
            let byMember = try await client.edit(bob, group, alices, to: "rewritten by bob")
            #expect(byMember.status == .forbidden)
            #expect(byMember.errorCode == "not_message_sender")

            let after = try await client.history(bob, group)
            #expect(after == before)
            #expect(after.array.compactMap { $0["body"].string } == ["bob wrote this", "alice wrote this"])
            #expect(after.array.allSatisfy { $0["editedAt"].isNull })
            #expect(try await client.view(bob, group)["changeSeq"].int == 0)
        }
    }

    @Test("deleting: in a direct chat only the sender; in a group also an admin or the owner, but not another member")
    func deleteRules() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let carol = try await client.register("carol")
            let created = try await client.request(
                .post, "/api/v1/conversations", token: alice.accessToken, json: #"{"type":"direct","userId":"\#(bob.id)"}"#)
            let direct = try #require(created.json["conversation"]["id"].string)
            let hers = try #require(try await client.send(alice, direct, "direct from alice").json["message"]["id"].string)
            let refused = try await client.deleteMessage(bob, direct, hers)
            #expect(refused.status == .forbidden)
            #expect(refused.errorCode == "not_message_sender")
            let directMessage = try await client.history(alice, direct)[0]
            #expect(directMessage["body"].string == "direct from alice")
            #expect(directMessage["deletedAt"].isNull)

            let group = try await client.createGroup(alice, members: [bob, carol])
            let promoted = try await client.request(
                .patch, "/api/v1/conversations/\(group)/members/\(bob.id)", token: alice.accessToken, json: #"{"role":"admin"}"#)
            try #require(promoted.status == .ok)
            let carolsFirst = try #require(try await client.send(carol, group, "carol one").json["message"]["id"].string)
            let carolsSecond = try #require(try await client.send(carol, group, "carol two").json["message"]["id"].string)
            let alices = try #require(try await client.send(alice, group, "from the owner").json["message"]["id"].string)

            let byMember = try await client.deleteMessage(carol, group, alices)
            #expect(byMember.status == .forbidden)
            #expect(byMember.errorCode == "not_message_sender")
            #expect(try await client.deleteMessage(bob, group, carolsFirst).status == .noContent, "an admin")
            #expect(try await client.deleteMessage(alice, group, carolsSecond).status == .noContent, "the owner")

            let history = try await client.history(carol, group)
            #expect(history.array.compactMap { $0["body"].string } == ["", "", "from the owner"])
            #expect(history.array.map { $0["deletedAt"].string != nil } == [true, true, false])
        }
    }

    @Test("search covers only the conversations the caller is in now; naming another one is 404")
    func searchScope() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let carol = try await client.register("carol")
            let secret = try await client.createGroup(alice, name: "Secret", members: [bob])
            let launch = try #require(try await client.send(alice, secret, "classified launch codes").json["message"]["id"].string)
            let carolsGroup = try await client.createGroup(carol, name: "Kitchen")
            let menu = try #require(try await client.send(carol, carolsGroup, "classified lunch menu").json["message"]["id"].string)

            #expect(Self.ids(try await client.search(carol, "classified")) == [menu])
            #expect(Self.ids(try await client.search(bob, "classified")) == [launch])
            #expect(Self.ids(try await client.search(carol, "launch")).isEmpty)
            let named = try await client.search(carol, "classified", "&conversationId=\(secret)")
            #expect(named.status == .notFound)
            #expect(named.errorCode == "conversation_not_found")
            #expect(!named.text.contains("launch"))

            // Removed from the group, bob no longer finds its messages.
            let removal = try await client.request(.delete, "/api/v1/conversations/\(secret)/members/\(bob.id)", token: alice.accessToken)
            #expect(removal.status == .noContent)
            let afterRemoval = try await client.search(bob, "classified")
            #expect(afterRemoval.status == .ok)
            #expect(Self.ids(afterRemoval).isEmpty)
            #expect(try await client.search(bob, "classified", "&conversationId=\(secret)").status == .notFound)
        }
    }

    @Test("a replyToId of another conversation, or unknown, is 400 invalid_reply over REST and an error frame over WebSocket")
    func replyAcrossConversations() async throws {
        try await TestApp.run(.live) { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let here = try await client.createGroup(alice, name: "Here", members: [bob])
            let shared = try await client.createGroup(alice, name: "Shared", members: [bob])
            let closed = try await client.createGroup(alice, name: "Closed")
            let hereID = try #require(try await client.send(alice, here, "in here").json["message"]["id"].string)
            let sharedID = try #require(try await client.send(alice, shared, "in shared").json["message"]["id"].string)
            let closedID = try #require(try await client.send(alice, closed, "closed secret").json["message"]["id"].string)

            let targets = [
                ("a message of another of bob's conversations", sharedID), ("a message of a conversation bob is not in", closedID),
                ("an unknown message", Self.unknownMessageID),
            ]
            for (label, target) in targets {
                let reply = try await client.reply(bob, here, "re", to: target)
                #expect(reply.status == .badRequest, "\(label)")
                #expect(reply.errorCode == "invalid_reply", "\(label)")
                #expect(!reply.text.contains("closed secret"))
            }

            let aliceSocket = try await WSTestClient.ready(port: client.port, token: alice.accessToken)
            let bobSocket = try await WSTestClient.ready(port: client.port, token: bob.accessToken)
            for (clientMsgID, target, code) in [
                ("w1", sharedID, "invalid_reply"), ("w2", closedID, "invalid_reply"), ("w3", "not-a-uuid", "invalid_id"),
            ] {
                try await bobSocket.send(
                    #"{"type":"send","conversationId":"\#(here)","clientMsgId":"\#(clientMsgID)","body":"re","replyToId":"\#(target)"}"#)
                let error = try await bobSocket.next("error")
                #expect(error["code"].string == code, "\(clientMsgID)")
                #expect(error["ref"].string == clientMsgID)
                #expect(error["message"].string?.contains("closed secret") == false)
            }
            try await bobSocket.send(#"{"type":"send","conversationId":"\#(here)","clientMsgId":"w4","body":"quoting you","replyToId":"\#(hereID)"}"#)
            let ack = try await bobSocket.next("ack")
            #expect(ack["clientMsgId"].string == "w4")
            #expect(ack["message"]["replyTo"]["id"].string == hereID)
            #expect(ack["message"]["replyTo"]["preview"].string == "in here")
            // Alice hears the good reply and nothing of the refused ones.
            let heard = try await aliceSocket.next("message")
            #expect(heard["message"]["body"].string == "quoting you")
            #expect(heard["message"]["replyTo"]["id"].string == hereID)

            #expect(try await client.history(bob, here).array.compactMap { $0["body"].string } == ["in here", "quoting you"])
            await aliceSocket.close()
            await bobSocket.close()
        }
    }

    @Test("a sync with change cursors for a conversation the caller is not in is refused and reveals nothing")
    func syncChangesNonMember() async throws {
        try await TestApp.run(.live) { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let mallory = try await client.register("mallory")
            let group = try await client.createGroup(alice, members: [bob])
            let id = try #require(try await client.send(alice, group, "classified").json["message"]["id"].string)
            #expect(try await client.edit(alice, group, id, to: "classified, revised").status == .ok)

            let intruder = try await WSTestClient.ready(port: client.port, token: mallory.accessToken)
            try await intruder.send(#"{"type":"sync","cursors":{"\#(group)":1},"changes":{"\#(group)":0}}"#)
            let refused = try await intruder.next("error")
            #expect(refused["code"].string == "conversation_not_found")
            #expect(refused["ref"].string == group)
            try await intruder.send(#"{"type":"ping"}"#)
            #expect(try await intruder.next("pong")["type"].string == "pong", "no updated or message frame came before")

            let member = try await WSTestClient.ready(port: client.port, token: bob.accessToken)
            let reply = try await Self.sync(member, group, seq: 1, changes: 0)
            #expect(reply.frames.map { $0["message"]["body"].string } == ["classified, revised"])
            #expect(reply.synced["changeSeq"].int == 1)
            await intruder.close()
            await member.close()
        }
    }

    // MARK: Bad input

    struct BadChange: Sendable, CustomTestStringConvertible {
        var label: String
        var method: HTTPRequest.Method
        /// After `/api/v1/conversations/{id}/messages/`; `{message}` is the message's id.
        var path: String
        var body: String?
        var status: HTTPResponse.Status
        var code: String
        var testDescription: String { label }

        init(_ label: String, _ method: HTTPRequest.Method, _ path: String, _ body: String?, _ status: HTTPResponse.Status, _ code: String) {
            self.label = label
            self.method = method
            self.path = path
            self.body = body
            self.status = status
            self.code = code
        }
    }

    static let badChanges: [BadChange] = [
        .init("edit to an empty body", .patch, "{message}", #"{"body":""}"#, .badRequest, "empty_body"),
        .init("edit to whitespace", .patch, "{message}", #"{"body":"  \n\t "}"#, .badRequest, "empty_body"),
        .init(
            "edit over the size limit", .patch, "{message}", #"{"body":"\#(String(repeating: "é", count: 2001))"}"#, .contentTooLarge,
            "message_too_large"),
        .init("edit with a body that is not a string", .patch, "{message}", #"{"body":42}"#, .badRequest, "invalid_field"),
        .init("edit with an unknown field", .patch, "{message}", #"{"body":"x","pinned":true}"#, .badRequest, "unknown_field"),
        .init("edit of an unknown message", .patch, unknownMessageID, #"{"body":"x"}"#, .notFound, "message_not_found"),
        .init("edit with a malformed message id", .patch, "not-a-uuid", #"{"body":"x"}"#, .badRequest, "invalid_id"),
        .init("delete of an unknown message", .delete, unknownMessageID, nil, .notFound, "message_not_found"),
        .init("delete with a malformed message id", .delete, "12345", nil, .badRequest, "invalid_id"),
        .init("reaction \"a\"", .put, "{message}/reactions/\(percentEncoded("a"))", nil, .badRequest, "invalid_emoji"),
        .init("reaction \"ab\"", .put, "{message}/reactions/\(percentEncoded("ab"))", nil, .badRequest, "invalid_emoji"),
        .init("reaction \"1\"", .put, "{message}/reactions/\(percentEncoded("1"))", nil, .badRequest, "invalid_emoji"),
        .init("reaction of two emoji", .put, "{message}/reactions/\(percentEncoded("👍👍"))", nil, .badRequest, "invalid_emoji"),
        .init("reaction of an emoji and a letter", .put, "{message}/reactions/\(percentEncoded("👍a"))", nil, .badRequest, "invalid_emoji"),
        .init("removing a reaction \"ab\"", .delete, "{message}/reactions/\(percentEncoded("ab"))", nil, .badRequest, "invalid_emoji"),
        .init("reaction on an unknown message", .put, "\(unknownMessageID)/reactions/\(percentEncoded("👍"))", nil, .notFound, "message_not_found"),
        .init("reaction with a malformed message id", .put, "xyz/reactions/\(percentEncoded("👍"))", nil, .badRequest, "invalid_id"),
    ]

    @Test("bad edits, deletions and reactions get a clear 4xx and change nothing", arguments: badChanges)
    func badChange(input: BadChange) async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let group = try await client.createGroup(alice, members: [bob])
            let id = try #require(try await client.send(alice, group, "original text").json["message"]["id"].string)
            #expect(try await client.react(bob, group, id, "👍").status == .noContent)
            let before = try await client.history(alice, group)

            let path = "/api/v1/conversations/\(group)/messages/" + input.path.replacingOccurrences(of: "{message}", with: id)
            let reply = try await client.request(input.method, path, token: alice.accessToken, json: input.body)
            #expect(reply.status == input.status)
            #expect(reply.errorCode == input.code)
            #expect(reply.json["error"]["message"].string?.isEmpty == false)

            let after = try await client.history(alice, group)
            #expect(after == before, "nothing changed")
            #expect(after[0]["body"].string == "original text")
            #expect(after[0]["editedAt"].isNull)
            #expect(after[0]["reactions"] == .array([Self.reaction("👍", [bob])]))
            #expect(try await client.view(alice, group)["changeSeq"].int == 1, "only bob's reaction")
        }
    }

    struct BadSearch: Sendable, CustomTestStringConvertible {
        var label: String
        /// The query string, without `?`.
        var query: String
        var code: String
        var testDescription: String { label }
    }

    static let seventeenTerms = (1...17).map { "w\($0)" }.joined(separator: " ")

    static let badSearches: [BadSearch] = [
        .init(label: "no q", query: "", code: "invalid_query"),
        .init(label: "empty q", query: "q=", code: "invalid_query"),
        .init(label: "blank q", query: "q=%20%20%09", code: "invalid_query"),
        .init(label: "q without letters or digits", query: "q=\(percentEncoded(#"!? * "" -"#))", code: "invalid_query"),
        .init(label: "q of 10,000 characters", query: "q=\(String(repeating: "a", count: 10_000))", code: "invalid_query"),
        .init(label: "q of 17 terms", query: "q=\(percentEncoded(seventeenTerms))", code: "invalid_query"),
        .init(label: "limit 0", query: "q=deploy&limit=0", code: "invalid_limit"),
        .init(label: "limit 51", query: "q=deploy&limit=51", code: "invalid_limit"),
        .init(label: "malformed conversationId", query: "q=deploy&conversationId=nope", code: "invalid_id"),
        .init(label: "malformed before", query: "q=deploy&before=nope", code: "invalid_id"),
    ]

    @Test("bad searches are 400 with a clear code", arguments: badSearches)
    func badSearch(input: BadSearch) async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let group = try await client.createGroup(alice)
            let id = try #require(try await client.send(alice, group, "deploy tonight").json["message"]["id"].string)
            let before = try await client.history(alice, group)

            let reply = try await client.request(.get, "/api/v1/search" + (input.query.isEmpty ? "" : "?" + input.query), token: alice.accessToken)
            #expect(reply.status == .badRequest)
            #expect(reply.errorCode == input.code)
            #expect(reply.json["error"]["message"].string?.isEmpty == false)

            #expect(try await client.history(alice, group) == before)
            #expect(Self.ids(try await client.search(alice, "deploy")) == [id], "a good search still finds it")
        }
    }

    // MARK: Helpers

    static func ids(_ reply: TestApp.Client.Reply) -> [String] {
        reply.json["results"].array.compactMap { $0["message"]["id"].string }
    }

    /// Sends a sync for one conversation (with a change cursor when `changes` is given) and returns its reply.
    static func sync(_ socket: WSTestClient, _ conversation: String, seq: Int, changes: Int?) async throws -> (
        frames: [JSONValue], synced: JSONValue
    ) {
        let changeField = changes.map { #","changes":{"\#(conversation)":\#($0)}"# } ?? ""
        try await socket.send(#"{"type":"sync","cursors":{"\#(conversation)":\#(seq)}\#(changeField)}"#)
        var frames: [JSONValue] = []
        while true {
            let frame = try await socket.next()
            switch frame["type"].string {
            case "synced": return (frames, frame)
            case "presence", "conversation", "typing", "receipt": continue
            default: frames.append(frame)
            }
        }
    }
}

/// Every byte percent-encoded, as a client puts an emoji (or anything) in a path segment or query value.
private func percentEncoded(_ text: String) -> String {
    text.utf8.map { byte in
        let hex = String(byte, radix: 16, uppercase: true)
        return byte < 16 ? "%0\(hex)" : "%\(hex)"
    }.joined()
}

/// A JSON object of string fields, escaped.
private func jsonObject(_ fields: [String: String]) -> String {
    String(decoding: (try? JSONEncoder().encode(fields)) ?? Data("{}".utf8), as: UTF8.self)
}

extension TestApp.Client {
    fileprivate func edit(_ editor: Account, _ conversation: String, _ message: String, to body: String) async throws -> Reply {
        try await request(
            .patch, "/api/v1/conversations/\(conversation)/messages/\(message)", token: editor.accessToken, json: jsonObject(["body": body]))
    }

    fileprivate func deleteMessage(_ caller: Account, _ conversation: String, _ message: String) async throws -> Reply {
        try await request(.delete, "/api/v1/conversations/\(conversation)/messages/\(message)", token: caller.accessToken)
    }

    /// PUT (`present`) or DELETE the caller's reaction, the emoji percent-encoded in the path.
    fileprivate func react(_ caller: Account, _ conversation: String, _ message: String, _ emoji: String, present: Bool = true) async throws
        -> Reply
    {
        try await request(
            present ? .put : .delete, "/api/v1/conversations/\(conversation)/messages/\(message)/reactions/\(percentEncoded(emoji))",
            token: caller.accessToken)
    }

    fileprivate func reply(_ sender: Account, _ conversation: String, _ body: String, to message: String) async throws -> Reply {
        try await request(
            .post, "/api/v1/conversations/\(conversation)/messages", token: sender.accessToken,
            json: jsonObject(["body": body, "replyToId": message]))
    }

    /// Every message of the conversation as `viewer` reads it, oldest first (a JSON array, so that
    /// a missing index reads as null rather than trapping).
    func history(_ viewer: Account, _ conversation: String) async throws -> JSONValue {
        let reply = try await request(.get, "/api/v1/conversations/\(conversation)/messages?after=0&limit=200", token: viewer.accessToken)
        try #require(reply.status == .ok, "history: \(reply.status) \(reply.json)")
        return reply.json["messages"]
    }

    /// `GET /conversations/{id}` as `viewer`.
    fileprivate func view(_ viewer: Account, _ conversation: String) async throws -> JSONValue {
        try await request(.get, "/api/v1/conversations/\(conversation)", token: viewer.accessToken).json["conversation"]
    }

    /// The conversation's entry in `viewer`'s `GET /conversations` (where mentionCount is computed).
    fileprivate func listed(_ viewer: Account, _ conversation: String) async throws -> JSONValue {
        let reply = try await request(.get, "/api/v1/conversations", token: viewer.accessToken)
        return reply.json["conversations"].array.first { $0["id"].string == conversation } ?? .null
    }

    /// `GET /search?q=` (percent-encoded) plus `extra` query parameters.
    fileprivate func search(_ caller: Account, _ query: String, _ extra: String = "") async throws -> Reply {
        try await request(.get, "/api/v1/search?q=\(percentEncoded(query))\(extra)", token: caller.accessToken)
    }
}
