import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import ParleyTestSupport
import Testing

@Suite("Bad input gets a clear 4xx and writes nothing")
struct InputValidationTests {
    struct BadBody: Sendable, CustomTestStringConvertible {
        var label: String
        var bytes: [UInt8]
        var status: HTTPResponse.Status
        var code: String
        var testDescription: String { label }

        init(_ label: String, _ text: String, _ code: String, _ status: HTTPResponse.Status = .badRequest) {
            self.init(label, Array(text.utf8), code, status)
        }

        init(_ label: String, _ bytes: [UInt8], _ code: String, _ status: HTTPResponse.Status = .badRequest) {
            self.label = label
            self.bytes = bytes
            self.status = status
            self.code = code
        }
    }

    static let badSends: [BadBody] = [
        .init("empty body", "", "malformed_json"),
        .init("malformed JSON", #"{"body": "hi""#, "malformed_json"),
        .init("JSON array", #"["hi"]"#, "malformed_json"),
        .init("wrong type", #"{"body": 42}"#, "invalid_field"),
        .init("null body", #"{"body": null}"#, "invalid_field"),
        .init("missing field", #"{"clientMsgId":"a"}"#, "invalid_field"),
        .init("unknown field", #"{"body":"hi","admin":true}"#, "unknown_field"),
        .init("invalid UTF-8", Array(#"{"body":""#.utf8) + [0xC3, 0x28, 0xFF] + Array(#""}"#.utf8), "invalid_utf8"),
        .init("blank message", #"{"body":"   "}"#, "empty_body"),
        .init("message over the limit", #"{"body":"\#(String(repeating: "é", count: 2001))"}"#, "message_too_large", .contentTooLarge),
        .init("request over the limit", #"{"body":"\#(String(repeating: "x", count: 70_000))"}"#, "body_too_large", .contentTooLarge),
        .init("bad clientMsgId", #"{"body":"hi","clientMsgId":"has space"}"#, "invalid_client_msg_id"),
        .init("clientMsgId too long", #"{"body":"hi","clientMsgId":"\#(String(repeating: "k", count: 65))"}"#, "invalid_client_msg_id"),
    ]

    @Test("bad message sends", arguments: badSends)
    func badSend(input: BadBody) async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let id = try await client.createGroup(alice)
            let reply = try await client.request(
                .post, "/api/v1/conversations/\(id)/messages", token: alice.accessToken, raw: ByteBuffer(bytes: input.bytes))
            #expect(reply.status == input.status)
            #expect(reply.errorCode == input.code)
            #expect((reply.json["error"]["message"].string?.isEmpty ?? true) == false)
            let check = try await client.request(.get, "/api/v1/conversations/\(id)/messages", token: alice.accessToken)
            #expect(check.json["messages"].array.isEmpty, "nothing half-written")
        }
    }

    @Test("a message of exactly the limit is accepted, with multi-byte characters counted as bytes")
    func limitBoundary() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let id = try await client.createGroup(alice)
            let body = String(repeating: "é", count: 2000)  // 4000 bytes
            let reply = try await client.send(alice, id, body)
            #expect(reply.status == .created)
            #expect(reply.json["message"]["body"].string == body)
        }
    }

    static let badConversationBodies: [BadBody] = [
        .init("unknown type", #"{"type":"channel","name":"x"}"#, "invalid_type"),
        .init("group without name", #"{"type":"group"}"#, "invalid_field"),
        .init("blank group name", #"{"type":"group","name":"  "}"#, "invalid_name"),
        .init("member ids not UUIDs", #"{"type":"group","name":"x","memberIds":["nope"]}"#, "invalid_field"),
        .init("member ids wrong type", #"{"type":"group","name":"x","memberIds":"all"}"#, "invalid_field"),
        .init("direct without user", #"{"type":"direct"}"#, "invalid_field"),
        .init("direct with a name", #"{"type":"direct","userId":"00000000-0000-7000-8000-000000000000","name":"x"}"#, "invalid_field"),
        .init("short passcode", #"{"type":"group","name":"x","passcode":"12"}"#, "invalid_passcode"),
        .init("unknown field", #"{"type":"group","name":"x","public":true}"#, "unknown_field"),
    ]

    @Test("bad conversation creation", arguments: badConversationBodies)
    func badConversation(input: BadBody) async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let reply = try await client.request(.post, "/api/v1/conversations", token: alice.accessToken, raw: ByteBuffer(bytes: input.bytes))
            #expect(reply.status == input.status)
            #expect(reply.errorCode == input.code)
            let list = try await client.request(.get, "/api/v1/conversations", token: alice.accessToken)
            #expect(list.json["conversations"].array.isEmpty, "nothing created")
        }
    }

    @Test("unknown member ids are 404 and leave the group unchanged")
    func unknownMembers() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let id = try await client.createGroup(alice)
            let reply = try await client.request(
                .post, "/api/v1/conversations/\(id)/members", token: alice.accessToken, json: #"{"userIds":["\#(bob.id)","\#(UUID())"]}"#)
            #expect(reply.status == .notFound)
            #expect(reply.errorCode == "user_not_found")
            let check = try await client.request(.get, "/api/v1/conversations/\(id)", token: alice.accessToken)
            #expect(check.json["conversation"]["members"].array.count == 1, "bob was not added half-way")
        }
    }

    @Test("malformed ids, unknown routes and wrong methods get v1 error bodies")
    func routing() async throws {
        try await TestApp.run { client in
            let alice = try await client.register("alice")
            let badID = try await client.request(.get, "/api/v1/conversations/not-a-uuid", token: alice.accessToken)
            #expect(badID.status == .badRequest)
            #expect(badID.errorCode == "invalid_id")
            let unknown = try await client.request(.get, "/api/v1/nothing-here", token: alice.accessToken)
            #expect(unknown.status == .notFound)
            #expect(unknown.errorCode == "not_found")
            let wrongMethod = try await client.request(.put, "/api/v1/conversations", token: alice.accessToken)
            #expect(wrongMethod.status.code >= 400 && wrongMethod.status.code < 500)
            #expect(wrongMethod.errorCode != nil)
            let badRead = try await client.request(.post, "/api/v1/conversations/\(UUID())/read", token: alice.accessToken, json: #"{"seq":"3"}"#)
            #expect(badRead.status == .badRequest)
            #expect(badRead.errorCode == "invalid_field")
            #expect(badRead.json["error"]["message"].string?.contains("seq") == true)
        }
    }
}
