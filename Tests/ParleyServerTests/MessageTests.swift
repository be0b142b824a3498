import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import ParleyTestSupport
import Testing

@Suite("Messages: send, idempotency, history, read watermark")
struct MessageTests {
    @Test("a send is 201 with the stored message; a replay is 200 with the same message")
    func sendAndReplay() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let id = try await client.createGroup(alice, members: [bob])
            let sent = try await client.send(alice, id, "hello", clientMsgId: "c-1")
            #expect(sent.status == .created)
            let message = sent.json["message"]
            #expect(message["seq"].int == 1)
            #expect(message["body"].string == "hello")
            #expect(message["senderId"].string == alice.id)
            #expect(message["conversationId"].string == id)
            #expect(message["clientMsgId"].string == "c-1")
            #expect(
                message.keys == [
                    "id", "conversationId", "seq", "senderId", "body", "clientMsgId", "createdAt", "editedAt", "deletedAt", "replyTo", "mentions",
                    "reactions", "attachments",
                ])

            let replay = try await client.send(alice, id, "hello", clientMsgId: "c-1")
            #expect(replay.status == .ok)
            #expect(replay.json["message"] == message)

            var headers = HTTPFields()
            headers[HTTPField.Name("Idempotency-Key")!] = "key-7"
            let viaHeader = try await client.request(
                .post, "/api/v1/conversations/\(id)/messages", token: alice.accessToken, json: #"{"body":"again"}"#, headers: headers)
            #expect(viaHeader.status == .created)
            #expect(viaHeader.json["message"]["clientMsgId"].string == "key-7")
            let headerReplay = try await client.request(
                .post, "/api/v1/conversations/\(id)/messages", token: alice.accessToken, json: #"{"body":"again"}"#, headers: headers)
            #expect(headerReplay.status == .ok)
            #expect(headerReplay.json["message"]["id"] == viaHeader.json["message"]["id"])

            let history = try await client.request(.get, "/api/v1/conversations/\(id)/messages", token: bob.accessToken)
            #expect(history.json["messages"].array.compactMap { $0["seq"].int } == [1, 2])
        }
    }

    @Test("history pages backwards and forwards with hasMore, ascending seq")
    func history() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let id = try await client.createGroup(alice)
            for i in 1...30 { try await client.send(alice, id, "m\(i)") }
            func seqs(_ query: String) async throws -> ([Int], Bool?) {
                let reply = try await client.request(.get, "/api/v1/conversations/\(id)/messages?\(query)", token: alice.accessToken)
                #expect(reply.status == .ok, "\(query): \(reply.json)")
                return (reply.json["messages"].array.compactMap { $0["seq"].int }, reply.json["hasMore"].bool)
            }
            let latest = try await seqs("limit=10")
            #expect(latest.0 == Array(21...30))
            #expect(latest.1 == true)
            let before = try await seqs("before=21&limit=15")
            #expect(before.0 == Array(6...20))
            #expect(before.1 == true)
            let after = try await seqs("after=25")
            #expect(after.0 == Array(26...30))
            #expect(after.1 == false)
            let all = try await seqs("after=0&limit=200")
            #expect(all.0 == Array(1...30))

            for bad in ["limit=0", "limit=201", "limit=abc", "before=1&after=2", "before=0"] {
                let reply = try await client.request(.get, "/api/v1/conversations/\(id)/messages?\(bad)", token: alice.accessToken)
                #expect(reply.status == .badRequest, "\(bad)")
            }
        }
    }

    @Test("read moves the caller's watermark forward only and updates unreadCount")
    func readWatermark() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let id = try await client.createGroup(alice, members: [bob])
            for i in 1...6 { try await client.send(alice, id, "m\(i)") }
            func bobView() async throws -> JSONValue {
                try await client.request(.get, "/api/v1/conversations/\(id)", token: bob.accessToken).json["conversation"]
            }
            #expect(try await bobView()["unreadCount"].int == 6)
            #expect(
                try await client.request(.post, "/api/v1/conversations/\(id)/read", token: bob.accessToken, json: #"{"seq":4}"#).status == .noContent)
            var view = try await bobView()
            #expect(view["unreadCount"].int == 2)
            #expect(view["readSeq"].int == 4)
            #expect(view["members"].array.first { $0["userId"].string == bob.id }?["deliveredSeq"].int == 4)
            try await client.request(.post, "/api/v1/conversations/\(id)/read", token: bob.accessToken, json: #"{"seq":2}"#)
            #expect(try await bobView()["readSeq"].int == 4, "watermarks never move back")
            try await client.request(.post, "/api/v1/conversations/\(id)/read", token: bob.accessToken, json: #"{"seq":1000}"#)
            view = try await bobView()
            #expect(view["readSeq"].int == 6)
            #expect(view["unreadCount"].int == 0)
            let negative = try await client.request(.post, "/api/v1/conversations/\(id)/read", token: bob.accessToken, json: #"{"seq":-1}"#)
            #expect(negative.status == .badRequest)
        }
    }

    @Test("200 concurrent REST sends from several users: seqs 1…200, no gap, no duplicate, replays add nothing")
    func concurrentSends() async throws {
        try await TestApp.run { client in
            var members: [TestApp.Client.Account] = []
            for name in ["ann", "ben", "cat", "dan", "eve"] { members.append(try await client.register(name)) }
            let id = try await client.createGroup(members[0], members: Array(members.dropFirst()))
            let senders = members
            let results = try await withThrowingTaskGroup(of: (Int, HTTPResponse.Status, Int?).self) { tasks in
                for i in 0..<200 {
                    tasks.addTask {
                        let reply = try await client.send(senders[i % senders.count], id, "message \(i)", clientMsgId: "m-\(i)")
                        return (i, reply.status, reply.json["message"]["seq"].int)
                    }
                }
                for i in 0..<40 {
                    tasks.addTask {
                        let reply = try await client.send(senders[i % senders.count], id, "message \(i)", clientMsgId: "m-\(i)")
                        return (i, reply.status, reply.json["message"]["seq"].int)
                    }
                }
                return try await tasks.reduce(into: []) { $0.append($1) }
            }
            #expect(results.allSatisfy { $0.1 == .created || $0.1 == .ok })
            #expect(results.filter { $0.1 == .created }.count == 200)
            var seqByKey: [Int: Set<Int>] = [:]
            for (key, _, seq) in results { if let seq { seqByKey[key, default: []].insert(seq) } }
            #expect(seqByKey.values.allSatisfy { $0.count == 1 }, "a replay returns the original seq")
            #expect(Set(seqByKey.values.flatMap { $0 }) == Set(1...200))

            let history = try await client.request(.get, "/api/v1/conversations/\(id)/messages?after=0&limit=200", token: senders[1].accessToken)
            #expect(history.json["messages"].array.compactMap { $0["seq"].int } == Array(1...200))
            #expect(history.json["hasMore"].bool == false)
            let conversation = try await client.request(.get, "/api/v1/conversations/\(id)", token: senders[1].accessToken)
            #expect(conversation.json["conversation"]["lastSeq"].int == 200)
        }
    }
}
