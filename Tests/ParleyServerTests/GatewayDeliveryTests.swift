import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import ParleyTestSupport
import Testing

@Suite("Gateway: authentication, delivery, acks, receipts")
struct GatewayDeliveryTests {
    @Test("a token at upgrade gets hello with the user, session and heartbeat")
    func helloWithHeader() async throws {
        try await TestApp.run(.live) { client in
            let alice = try await client.register("alice")
            let socket = try await WSTestClient.connect(port: client.port, token: alice.accessToken)
            let hello = try await socket.next()
            #expect(hello["type"].string == "hello")
            #expect(hello["userId"].string == alice.id)
            #expect(hello["sessionId"].string != nil)
            #expect(hello["heartbeatSeconds"].int == 30)
            await socket.close()
        }
    }

    @Test("an auth frame authenticates a socket opened without credentials; frames before it are refused")
    func authFrame() async throws {
        try await TestApp.run(.live) { client in
            let alice = try await client.register("alice")
            let socket = try await WSTestClient.connect(port: client.port)
            try await socket.send(#"{"type":"ping"}"#)
            #expect(try await socket.next()["type"].string == "pong")
            try await socket.send(#"{"type":"sync","cursors":{}}"#)
            let refused = try await socket.next()
            #expect(refused["type"].string == "error")
            #expect(refused["code"].string == "unauthenticated")
            try await socket.send(#"{"type":"auth","token":"\#(alice.accessToken)"}"#)
            let hello = try await socket.next()
            #expect(hello["type"].string == "hello")
            #expect(hello["userId"].string == alice.id)
            await socket.close()
        }
    }

    @Test("no auth frame within the timeout, or a bad token, closes with 1008")
    func authFailures() async throws {
        try await TestApp.run(.live, configure: { $0.gateway.authTimeoutSeconds = 0.3 }) { client in
            let silent = try await WSTestClient.connect(port: client.port)
            #expect(try await silent.closed() == 1008)
        }
        // The default timeout here, so that a loaded machine cannot let the timeout close the socket
        // before the bad token is answered.
        try await TestApp.run(.live) { client in
            let liar = try await WSTestClient.connect(port: client.port)
            try await liar.send(#"{"type":"auth","token":"forged.token.value"}"#)
            let error = try await liar.next()
            #expect(error["type"].string == "error")
            #expect(error["code"].string == "invalid_token")
            #expect(try await liar.closed() == 1008)

            let reply = try await client.request(.get, "/api/v1/ws", token: "forged")
            #expect(reply.status.code >= 400)
        }
    }

    @Test("a send is acked after it is stored and reaches every socket of every member, and nobody else")
    func deliveryToAllMemberSockets() async throws {
        try await TestApp.run(.live) { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let carol = try await client.register("carol")
            let group = try await client.createGroup(alice, name: "Crew", members: [bob])
            let direct = try await client.request(
                .post, "/api/v1/conversations", token: alice.accessToken, json: #"{"type":"direct","userId":"\#(carol.id)"}"#)
            let directID = try #require(direct.json["conversation"]["id"].string)

            let alicePhone = try await WSTestClient.ready(port: client.port, token: alice.accessToken)
            let aliceLaptop = try await WSTestClient.ready(port: client.port, token: alice.accessToken)
            let bobSocket = try await WSTestClient.ready(port: client.port, token: bob.accessToken)
            let carolSocket = try await WSTestClient.ready(port: client.port, token: carol.accessToken)

            try await alicePhone.send(#"{"type":"send","conversationId":"\#(group)","clientMsgId":"c1","body":"hello crew"}"#)
            let ack = try await alicePhone.next("ack")
            #expect(ack["clientMsgId"].string == "c1")
            #expect(ack["message"]["seq"].int == 1)
            #expect(ack["message"]["body"].string == "hello crew")
            // Acked means stored: the history already has it.
            let history = try await client.request(.get, "/api/v1/conversations/\(group)/messages", token: bob.accessToken)
            #expect(history.json["messages"][0]["id"] == ack["message"]["id"])

            for (name, socket) in [("alice's phone", alicePhone), ("alice's laptop", aliceLaptop), ("bob", bobSocket)] {
                let frame = try await socket.next("message")
                #expect(frame["message"]["id"] == ack["message"]["id"], "\(name)")
                #expect(frame["message"]["senderId"].string == alice.id, "\(name)")
            }
            // Carol is not in the group: the next thing she hears is the direct message sent after it.
            _ = try await client.send(alice, directID, "only for carol")
            let carolFrame = try await carolSocket.next("message")
            #expect(carolFrame["message"]["body"].string == "only for carol")

            // A REST send fans out the same way.
            _ = try await client.send(bob, group, "via REST")
            #expect(try await alicePhone.next("message")["message"]["body"].string == "only for carol")
            #expect(try await alicePhone.next("message")["message"]["body"].string == "via REST")
            #expect(try await bobSocket.next("message")["message"]["body"].string == "via REST")

            for socket in [alicePhone, aliceLaptop, bobSocket, carolSocket] { await socket.close() }
        }
    }

    @Test("pipelined sends on one socket are acked in order with increasing seqs; replays are acked with the original")
    func pipelinedSends() async throws {
        try await TestApp.run(.live) { client in
            let alice = try await client.register("alice")
            let group = try await client.createGroup(alice)
            let socket = try await WSTestClient.ready(port: client.port, token: alice.accessToken)
            for i in 0..<50 {
                try await socket.send(#"{"type":"send","conversationId":"\#(group)","clientMsgId":"p\#(i)","body":"message \#(i)"}"#)
            }
            try await socket.send(#"{"type":"send","conversationId":"\#(group)","clientMsgId":"p7","body":"message 7"}"#)
            var acked: [(String, Int)] = []
            while acked.count < 51 {
                let frame = try await socket.next(timeout: .seconds(20))
                if frame["type"].string == "ack" {
                    acked.append((frame["clientMsgId"].string ?? "", frame["message"]["seq"].int ?? 0))
                }
            }
            #expect(acked.prefix(50).map(\.0) == (0..<50).map { "p\($0)" })
            #expect(acked.prefix(50).map(\.1) == Array(1...50))
            #expect(acked[50].0 == "p7" && acked[50].1 == 8, "the replay returns the original seq")
            await socket.close()
        }
    }

    @Test("send errors come back as error frames carrying the clientMsgId")
    func sendErrors() async throws {
        try await TestApp.run(.live) { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let bobsGroup = try await client.createGroup(bob)
            let group = try await client.createGroup(alice)
            let socket = try await WSTestClient.ready(port: client.port, token: alice.accessToken)
            let cases: [(String, String)] = [
                (#"{"type":"send","conversationId":"\#(bobsGroup)","clientMsgId":"e1","body":"intrude"}"#, "conversation_not_found"),
                (#"{"type":"send","conversationId":"\#(group)","clientMsgId":"e2","body":"   "}"#, "empty_body"),
                (
                    #"{"type":"send","conversationId":"\#(group)","clientMsgId":"e3","body":"\#(String(repeating: "x", count: 4001))"}"#,
                    "message_too_large"
                ),
                (#"{"type":"send","conversationId":"not-a-uuid","clientMsgId":"e4","body":"hi"}"#, "invalid_frame"),
                (#"{"type":"send","conversationId":"\#(group)","clientMsgId":"e5"}"#, "invalid_frame"),
            ]
            for (i, (frame, code)) in cases.enumerated() {
                try await socket.send(frame)
                let error = try await socket.next("error")
                #expect(error["code"].string == code, "\(frame)")
                #expect(error["ref"].string == "e\(i + 1)")
                #expect(error["message"].string?.isEmpty == false)
            }
            let bobView = try await client.request(.get, "/api/v1/conversations/\(bobsGroup)", token: bob.accessToken)
            #expect(bobView.json["conversation"]["lastSeq"].int == 0)
            await socket.close()
        }
    }

    @Test("delivered and read watermarks produce receipts for the members and never move back")
    func receipts() async throws {
        try await TestApp.run(.live) { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let group = try await client.createGroup(alice, members: [bob])
            for i in 1...3 { _ = try await client.send(alice, group, "m\(i)") }
            let aliceSocket = try await WSTestClient.ready(port: client.port, token: alice.accessToken)
            let bobSocket = try await WSTestClient.ready(port: client.port, token: bob.accessToken)

            try await bobSocket.send(#"{"type":"delivered","conversationId":"\#(group)","seq":3}"#)
            let delivered = try await aliceSocket.next("receipt", skipping: ["presence"])
            #expect(delivered["userId"].string == bob.id)
            #expect(delivered["kind"].string == "delivered")
            #expect(delivered["seq"].int == 3)
            #expect(delivered["conversationId"].string == group)

            try await bobSocket.send(#"{"type":"read","conversationId":"\#(group)","seq":2}"#)
            // Moving backwards is a no-op and produces no receipt: the next receipt is the read at 2.
            try await bobSocket.send(#"{"type":"delivered","conversationId":"\#(group)","seq":1}"#)
            try await bobSocket.send(#"{"type":"read","conversationId":"\#(group)","seq":3}"#)
            let read2 = try await aliceSocket.next("receipt", skipping: ["presence"])
            #expect(read2["kind"].string == "read" && read2["seq"].int == 2)
            let read3 = try await aliceSocket.next("receipt", skipping: ["presence"])
            #expect(read3["kind"].string == "read" && read3["seq"].int == 3)

            let view = try await client.request(.get, "/api/v1/conversations/\(group)", token: bob.accessToken)
            #expect(view.json["conversation"]["unreadCount"].int == 0)
            // Bob's own sockets hear his receipts too (to clear badges on other devices).
            let own = try await bobSocket.next("receipt", skipping: ["presence"])
            #expect(own["userId"].string == bob.id)
            await aliceSocket.close()
            await bobSocket.close()
        }
    }
}
