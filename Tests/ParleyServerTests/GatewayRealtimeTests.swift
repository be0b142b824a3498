import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import ParleyTestSupport
import Testing

@Suite("Gateway: typing, presence, membership changes, sync")
struct GatewayRealtimeTests {
    @Test("typing start reaches the other members once per throttle window; stop and expiry end it")
    func typing() async throws {
        try await TestApp.run(
            .live,
            configure: {
                $0.gateway.typingThrottleSeconds = 60
                $0.gateway.typingTTLSeconds = 0.5
                $0.gateway.maintenanceIntervalSeconds = 0.1
            }
        ) { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let group = try await client.createGroup(alice, members: [bob])
            let aliceSocket = try await WSTestClient.ready(port: client.port, token: alice.accessToken)
            let bobSocket = try await WSTestClient.ready(port: client.port, token: bob.accessToken)

            try await aliceSocket.send(#"{"type":"typing","conversationId":"\#(group)","state":"start"}"#)
            try await aliceSocket.send(#"{"type":"typing","conversationId":"\#(group)","state":"start"}"#)
            try await aliceSocket.send(#"{"type":"typing","conversationId":"\#(group)","state":"stop"}"#)
            let start = try await bobSocket.next("typing", skipping: ["presence"])
            #expect(start["userId"].string == alice.id)
            #expect(start["conversationId"].string == group)
            #expect(start["state"].string == "start")
            let stop = try await bobSocket.next("typing", skipping: ["presence"])
            #expect(stop["state"].string == "stop", "the repeated start inside the throttle window was not relayed")

            // A client that goes quiet: its indicator expires and a stop is relayed for it.
            try await aliceSocket.send(#"{"type":"typing","conversationId":"\#(group)","state":"start"}"#)
            #expect(try await bobSocket.next("typing", skipping: ["presence"])["state"].string == "start")
            let expired = try await bobSocket.next("typing", skipping: ["presence"], timeout: .seconds(5))
            #expect(expired["state"].string == "stop")
            #expect(expired["userId"].string == alice.id)

            // Typing in a conversation you are not in is refused.
            let carol = try await client.register("carol")
            let carolSocket = try await WSTestClient.ready(port: client.port, token: carol.accessToken)
            try await carolSocket.send(#"{"type":"typing","conversationId":"\#(group)","state":"start"}"#)
            let refused = try await carolSocket.next("error")
            #expect(refused["code"].string == "conversation_not_found")
            for socket in [aliceSocket, bobSocket, carolSocket] { await socket.close() }
        }
    }

    @Test("presence: online while any socket is open, offline with lastSeenAt after the last closes")
    func presence() async throws {
        try await TestApp.run(.live) { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let stranger = try await client.register("stranger")
            _ = try await client.createGroup(alice, members: [bob])
            let bobSocket = try await WSTestClient.ready(port: client.port, token: bob.accessToken)
            let strangerSocket = try await WSTestClient.ready(port: client.port, token: stranger.accessToken)

            func presenceOf(_ id: String) async throws -> JSONValue {
                try await client.request(.get, "/api/v1/presence?userIds=\(id)", token: bob.accessToken).json["presence"][0]
            }
            #expect(try await presenceOf(alice.id)["status"].string == "offline")
            #expect(try await presenceOf(alice.id)["lastSeenAt"].isNull, "never connected")

            let phone = try await WSTestClient.ready(port: client.port, token: alice.accessToken)
            let online = try await bobSocket.next("presence", skipping: [])
            #expect(online["userId"].string == alice.id)
            #expect(online["status"].string == "online")
            #expect(try await presenceOf(alice.id)["status"].string == "online")

            let laptop = try await WSTestClient.ready(port: client.port, token: alice.accessToken)
            await phone.close()
            #expect(try await presenceOf(alice.id)["status"].string == "online", "the laptop is still connected")
            await laptop.close()
            let offline = try await bobSocket.next("presence", skipping: [])
            #expect(offline["status"].string == "offline")
            #expect(offline["lastSeenAt"].string != nil)
            let state = try await presenceOf(alice.id)
            #expect(state["status"].string == "offline")
            #expect(state["lastSeenAt"] == offline["lastSeenAt"])

            // Someone who shares no conversation with alice is not told; the next thing the stranger
            // hears is a message sent to them after all of the above.
            let direct = try await client.request(
                .post, "/api/v1/conversations", token: bob.accessToken, json: #"{"type":"direct","userId":"\#(stranger.id)"}"#)
            _ = try await strangerSocket.next("conversation", skipping: [])
            _ = try await client.send(bob, try #require(direct.json["conversation"]["id"].string), "hi stranger")
            #expect(try await strangerSocket.next("message", skipping: [])["message"]["body"].string == "hi stranger")

            let bad = try await client.request(.get, "/api/v1/presence?userIds=nope", token: bob.accessToken)
            #expect(bad.status == .badRequest)
            let none = try await client.request(.get, "/api/v1/presence", token: bob.accessToken)
            #expect(none.status == .badRequest)
            await bobSocket.close()
            await strangerSocket.close()
        }
    }

    @Test("membership changes take effect at once: added members get later messages, removed ones nothing")
    func membershipChanges() async throws {
        try await TestApp.run(.live) { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let carol = try await client.register("carol")
            let group = try await client.createGroup(alice, name: "Crew", members: [bob])
            let bobSocket = try await WSTestClient.ready(port: client.port, token: bob.accessToken)
            let carolSocket = try await WSTestClient.ready(port: client.port, token: carol.accessToken)

            _ = try await client.request(
                .post, "/api/v1/conversations/\(group)/members", token: alice.accessToken, json: #"{"userIds":["\#(carol.id)"]}"#)
            let added = try await carolSocket.next("conversation", skipping: ["presence"])
            #expect(added["event"].string == "created")
            #expect(added["conversation"]["id"].string == group)
            #expect(added["conversation"]["name"].string == "Crew")
            let updated = try await bobSocket.next("conversation", skipping: ["presence"])
            #expect(updated["event"].string == "updated")
            #expect(updated["conversation"]["members"].array.count == 3)

            _ = try await client.send(alice, group, "welcome carol")
            #expect(try await carolSocket.next("message", skipping: ["presence"])["message"]["body"].string == "welcome carol")
            #expect(try await bobSocket.next("message", skipping: ["presence"])["message"]["body"].string == "welcome carol")

            let removal = try await client.request(.delete, "/api/v1/conversations/\(group)/members/\(carol.id)", token: alice.accessToken)
            #expect(removal.status == .noContent)
            let removed = try await carolSocket.next("conversation", skipping: ["presence"])
            #expect(removed["event"].string == "removed")
            #expect(removed["conversation"]["id"].string == group)

            _ = try await client.send(alice, group, "carol must not see this")
            try await carolSocket.send(#"{"type":"sync","cursors":{"\#(group)":0}}"#)
            let syncRefused = try await carolSocket.next("error", skipping: ["presence"])
            #expect(syncRefused["code"].string == "conversation_not_found")
            #expect(syncRefused["ref"].string == group)
            // The frame after the removal is the sync refusal: the group message never reached carol.
            #expect(try await bobSocket.next("conversation", skipping: ["presence"])["event"].string == "updated")
            #expect(try await bobSocket.next("message", skipping: ["presence"])["message"]["body"].string == "carol must not see this")

            // Deleting the group tells the remaining members.
            _ = try await client.request(.delete, "/api/v1/conversations/\(group)", token: alice.accessToken)
            #expect(try await bobSocket.next("conversation", skipping: ["presence"])["event"].string == "deleted")
            await bobSocket.close()
            await carolSocket.close()
        }
    }

    @Test("a client offline while 100 messages are sent gets all of them exactly once, in order, by sync")
    func syncAfterReconnect() async throws {
        try await TestApp.run(.live, configure: { $0.gateway.syncPageSize = 40 }) { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let group = try await client.createGroup(alice, members: [bob])
            let direct = try await client.request(
                .post, "/api/v1/conversations", token: alice.accessToken, json: #"{"type":"direct","userId":"\#(bob.id)"}"#)
            let directID = try #require(direct.json["conversation"]["id"].string)

            let first = try await WSTestClient.ready(port: client.port, token: bob.accessToken)
            _ = try await client.send(alice, group, "before")
            let seen = try await first.next("message", skipping: ["presence", "conversation"])
            #expect(seen["message"]["seq"].int == 1)
            await first.close()

            // While bob is away, 100 messages in his two conversations, from REST and a socket.
            let aliceSocket = try await WSTestClient.ready(port: client.port, token: alice.accessToken)
            for i in 1...60 {
                try await aliceSocket.send(#"{"type":"send","conversationId":"\#(group)","clientMsgId":"g\#(i)","body":"group \#(i)"}"#)
            }
            for i in 1...40 { _ = try await client.send(alice, directID, "direct \(i)", clientMsgId: "d\(i)") }
            var acks = 0
            while acks < 60 { if try await aliceSocket.next()["type"].string == "ack" { acks += 1 } }

            let second = try await WSTestClient.ready(port: client.port, token: bob.accessToken)
            var cursors = [group: 1, directID: 0]
            var received: [String: [Int]] = [group: [], directID: []]
            var bodies: [String: [String]] = [group: [], directID: []]
            var open = Set(cursors.keys)
            while !open.isEmpty {
                let request = open.map { #""\#($0)":\#(cursors[$0]!)"# }.joined(separator: ",")
                try await second.send(#"{"type":"sync","cursors":{\#(request)}}"#)
                var pending = open
                while !pending.isEmpty {
                    let frame = try await second.next(timeout: .seconds(10))
                    switch frame["type"].string {
                    case "message":
                        let conversation = try #require(frame["message"]["conversationId"].string)
                        let seq = try #require(frame["message"]["seq"].int)
                        received[conversation, default: []].append(seq)
                        bodies[conversation, default: []].append(frame["message"]["body"].string ?? "")
                        cursors[conversation] = max(cursors[conversation] ?? 0, seq)
                    case "synced":
                        let conversation = try #require(frame["conversationId"].string)
                        pending.remove(conversation)
                        if frame["hasMore"].bool == false { open.remove(conversation) }
                    case "presence", "conversation":
                        continue
                    default:
                        Issue.record("unexpected frame \(frame)")
                    }
                }
            }
            #expect(received[group] == Array(2...61), "60 group messages after the one already seen, once each, in order")
            #expect(received[directID] == Array(1...40))
            #expect(bodies[group]?.first == "group 1" && bodies[group]?.last == "group 60")
            #expect((received[group]?.count ?? 0) + (received[directID]?.count ?? 0) == 100)
            await second.close()
            await aliceSocket.close()
        }
    }

    @Test("logging out closes that session's sockets with 4001; other sessions stay connected")
    func logoutClosesSockets() async throws {
        try await TestApp.run(.live) { client in
            let alice = try await client.register("alice")
            let login = try await client.request(.post, "/api/v1/auth/login", json: #"{"login":"alice","password":"password123"}"#)
            let otherToken = try #require(login.json["accessToken"].string)
            let first = try await WSTestClient.ready(port: client.port, token: alice.accessToken)
            let second = try await WSTestClient.ready(port: client.port, token: otherToken)
            #expect(try await client.request(.post, "/api/v1/auth/logout", token: alice.accessToken).status == .noContent)
            #expect(try await first.closed() == 4001)
            try await second.send(#"{"type":"ping"}"#)
            #expect(try await second.next()["type"].string == "pong")
            await second.close()
        }
    }

    // The test client always sends `Origin: ws://127.0.0.1` (no port), which is not this server's
    // origin: a cookie upgrade from it is refused until that origin is allow-listed.
    @Test("a cookie-authenticated upgrade from a foreign Origin is refused; an allow-listed one is accepted")
    func cookieUpgradeOrigin() async throws {
        try await TestApp.run(.live) { client in
            let alice = try await client.register("alice")
            var cookie = HTTPFields()
            cookie[.cookie] = "parley_access=\(alice.accessToken)"
            await #expect(throws: (any Error).self, "the upgrade itself is refused") {
                try await WSTestClient.connect(port: client.port, headers: cookie)
            }
        }
        try await TestApp.run(.live, configure: { $0.corsAllowedOrigins = ["ws://127.0.0.1"] }) { client in
            let alice = try await client.register("alice")
            var cookie = HTTPFields()
            cookie[.cookie] = "parley_access=\(alice.accessToken)"
            let accepted = try await WSTestClient.connect(port: client.port, headers: cookie)
            #expect(try await accepted.next()["type"].string == "hello")
            await accepted.close()
        }
    }
}
