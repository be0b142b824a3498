import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import ParleyTestSupport
import Testing

@Suite("Conversations: direct chats, groups, roles, membership")
struct ConversationTests {
    @Test("a direct conversation is 201 the first time and 200 with the same id afterwards, from either side")
    func direct() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let first = try await client.request(
                .post, "/api/v1/conversations", token: alice.accessToken, json: #"{"type":"direct","userId":"\#(bob.id)"}"#)
            #expect(first.status == .created)
            let conversation = first.json["conversation"]
            #expect(conversation["type"].string == "direct")
            #expect(conversation["name"].isNull)
            #expect(conversation["lastSeq"].int == 0)
            #expect(conversation["unreadCount"].int == 0)
            #expect(conversation["lastMessage"].isNull)
            #expect(Set(conversation["members"].array.compactMap { $0["userId"].string }) == [alice.id, bob.id])
            #expect(
                conversation.keys.isSuperset(of: [
                    "id", "type", "name", "members", "lastSeq", "readSeq", "unreadCount", "lastMessage", "createdAt", "updatedAt",
                ]))

            let again = try await client.request(
                .post, "/api/v1/conversations", token: bob.accessToken, json: #"{"type":"direct","userId":"\#(alice.id)"}"#)
            #expect(again.status == .ok)
            #expect(again.json["conversation"]["id"] == conversation["id"])

            let yourself = try await client.request(
                .post, "/api/v1/conversations", token: alice.accessToken, json: #"{"type":"direct","userId":"\#(alice.id)"}"#)
            #expect(yourself.status == .badRequest)
            let nobody = try await client.request(
                .post, "/api/v1/conversations", token: alice.accessToken, json: #"{"type":"direct","userId":"\#(UUID())"}"#)
            #expect(nobody.status == .notFound)
            #expect(nobody.errorCode == "user_not_found")
        }
    }

    @Test("a group: owner, members, rename by admin, passcode never shown")
    func groupLifecycle() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let carol = try await client.register("carol")
            let id = try await client.createGroup(alice, name: "Crew", members: [bob], passcode: "sesame")
            let shown = try await client.request(.get, "/api/v1/conversations/\(id)", token: bob.accessToken)
            #expect(shown.status == .ok)
            let roles = Dictionary(
                uniqueKeysWithValues: shown.json["conversation"]["members"].array.map { ($0["userId"].string ?? "", $0["role"].string ?? "") })
            #expect(roles == [alice.id: "owner", bob.id: "member"])
            #expect(shown.json["conversation"]["hasPasscode"].bool == true)
            #expect(!shown.text.contains("sesame"))

            let memberRename = try await client.request(.patch, "/api/v1/conversations/\(id)", token: bob.accessToken, json: #"{"name":"Mine"}"#)
            #expect(memberRename.status == .forbidden)
            #expect(memberRename.errorCode == "insufficient_role")

            let promote = try await client.request(
                .patch, "/api/v1/conversations/\(id)/members/\(bob.id)", token: alice.accessToken, json: #"{"role":"admin"}"#)
            #expect(promote.status == .ok)
            let rename = try await client.request(
                .patch, "/api/v1/conversations/\(id)", token: bob.accessToken, json: #"{"name":"Renamed","passcode":null}"#)
            #expect(rename.status == .ok)
            #expect(rename.json["conversation"]["name"].string == "Renamed")
            #expect(rename.json["conversation"]["hasPasscode"].bool == false)

            let add = try await client.request(
                .post, "/api/v1/conversations/\(id)/members", token: bob.accessToken, json: #"{"userIds":["\#(carol.id)"]}"#)
            #expect(add.status == .ok)
            #expect(add.json["conversation"]["members"].array.count == 3)

            let adminDelete = try await client.request(.delete, "/api/v1/conversations/\(id)", token: bob.accessToken)
            #expect(adminDelete.status == .forbidden)
            let ownerDelete = try await client.request(.delete, "/api/v1/conversations/\(id)", token: alice.accessToken)
            #expect(ownerDelete.status == .noContent)
            let gone = try await client.request(.get, "/api/v1/conversations/\(id)", token: alice.accessToken)
            #expect(gone.status == .notFound)
        }
    }

    @Test("members leave themselves; admins remove lower ranks only")
    func removeAndLeave() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let carol = try await client.register("carol")
            let id = try await client.createGroup(alice, members: [bob, carol])
            let memberRemoves = try await client.request(.delete, "/api/v1/conversations/\(id)/members/\(carol.id)", token: bob.accessToken)
            #expect(memberRemoves.status == .forbidden)
            let memberRemovesOwner = try await client.request(.delete, "/api/v1/conversations/\(id)/members/\(alice.id)", token: bob.accessToken)
            #expect(memberRemovesOwner.status == .forbidden)

            let leave = try await client.request(.delete, "/api/v1/conversations/\(id)/members/\(bob.id)", token: bob.accessToken)
            #expect(leave.status == .noContent)
            #expect(try await client.request(.get, "/api/v1/conversations/\(id)", token: bob.accessToken).status == .notFound)
            #expect(try await client.send(bob, id, "still here?").status == .notFound)

            let kick = try await client.request(.delete, "/api/v1/conversations/\(id)/members/\(carol.id)", token: alice.accessToken)
            #expect(kick.status == .noContent)
            let list = try await client.request(.get, "/api/v1/conversations", token: carol.accessToken)
            #expect(list.json["conversations"].array.isEmpty)
            let again = try await client.request(.delete, "/api/v1/conversations/\(id)/members/\(carol.id)", token: alice.accessToken)
            #expect(again.status == .notFound)
            #expect(again.errorCode == "member_not_found")
        }
    }

    @Test("joining by passcode: right code joins, wrong code is 403, no passcode means invitation only")
    func joinByPasscode() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let open = try await client.createGroup(alice, name: "Club", passcode: "letmein")
            let closed = try await client.createGroup(alice, name: "Private")

            let wrong = try await client.request(.post, "/api/v1/conversations/\(open)/join", token: bob.accessToken, json: #"{"passcode":"guess"}"#)
            #expect(wrong.status == .forbidden)
            #expect(wrong.errorCode == "wrong_passcode")
            #expect(try await client.request(.get, "/api/v1/conversations/\(open)", token: bob.accessToken).status == .notFound)

            let right = try await client.request(
                .post, "/api/v1/conversations/\(open)/join", token: bob.accessToken, json: #"{"passcode":"letmein"}"#)
            #expect(right.status == .ok)
            #expect(right.json["conversation"]["members"].array.contains { $0["userId"].string == bob.id && $0["role"].string == "member" })
            #expect(try await client.send(bob, open, "hi all").status == .created)

            let invitationOnly = try await client.request(
                .post, "/api/v1/conversations/\(closed)/join", token: bob.accessToken, json: #"{"passcode":"anything"}"#)
            #expect(invitationOnly.status == .forbidden)
            #expect(invitationOnly.errorCode == "join_not_allowed")
            let unknown = try await client.request(
                .post, "/api/v1/conversations/\(UUID())/join", token: bob.accessToken, json: #"{"passcode":"letmein"}"#)
            #expect(unknown.status == .notFound)
        }
    }

    @Test("the list is newest activity first and carries unread counts and the last message")
    func listing() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let first = try await client.createGroup(alice, name: "First", members: [bob])
            let second = try await client.createGroup(alice, name: "Second", members: [bob])
            try await Task.sleep(for: .milliseconds(5))
            try await client.send(alice, first, "one")
            try await client.send(alice, first, "two")

            let list = try await client.request(.get, "/api/v1/conversations", token: bob.accessToken)
            let conversations = list.json["conversations"].array
            #expect(conversations.compactMap { $0["id"].string } == [first, second])
            #expect(conversations[0]["unreadCount"].int == 2)
            #expect(conversations[0]["lastMessage"]["body"].string == "two")
            #expect(conversations[1]["unreadCount"].int == 0)

            let aliceView = try await client.request(.get, "/api/v1/conversations", token: alice.accessToken)
            #expect(aliceView.json["conversations"][0]["unreadCount"].int == 0, "own sends are read")
        }
    }
}
