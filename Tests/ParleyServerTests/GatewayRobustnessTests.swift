import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import ParleyTestSupport
import Testing

@Suite("Gateway robustness: slow readers, hostile frames")
struct GatewayRobustnessTests {
    @Test("a client that stops reading does not hold up the others and is disconnected once its queue is full")
    func slowReader() async throws {
        try await TestApp.run(.live, configure: { $0.gateway.maxInFlightSends = 128 }) { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let sloth = try await client.register("sloth")
            let group = try await client.createGroup(bob, members: [alice, sloth])

            let (stalled, status) = try await RawWebSocket.connect(port: client.port, token: sloth.accessToken, receiveBuffer: 4096)
            #expect(status.contains("101"))
            defer { stalled.close() }
            let aliceSocket = try await WSTestClient.ready(port: client.port, token: alice.accessToken)
            let bobSocket = try await WSTestClient.ready(port: client.port, token: bob.accessToken)

            // ~15 MB of messages: far more than the stalled socket's kernel buffers (≤ 4 MB here) and
            // its queue (1024 frames) can hold.
            let count = 5000
            let body = String(repeating: "x", count: 3000)
            // Bob sends in rounds of 100 and alice must get each round before the next is sent, so every
            // round shows that delivery to her goes on while the stalled socket's backlog grows.
            var seqs: [Int] = []
            var slothWentOffline = false
            var cutOffInRound: Int?
            for round in 0..<(count / 100) {
                for i in (round * 100 + 1)...(round * 100 + 100) {
                    try await bobSocket.send(#"{"type":"send","conversationId":"\#(group)","clientMsgId":"b\#(i)","body":"\#(i) \#(body)"}"#)
                }
                while seqs.count < (round + 1) * 100 {
                    let frame = try await aliceSocket.next(timeout: .seconds(15))
                    switch frame["type"].string {
                    case "message": seqs.append(frame["message"]["seq"].int ?? 0)
                    case "presence" where frame["userId"].string == sloth.id && frame["status"].string == "offline":
                        slothWentOffline = true
                        cutOffInRound = cutOffInRound ?? round
                    default: continue
                    }
                }
            }
            #expect(seqs == Array(1...count), "alice got every message, in order")
            // The stalled socket's backlog (its queue plus the kernel buffers) holds well under half of
            // the 15 MB, so it is cut off midway, and alice's rounds after that still complete.
            #expect((cutOffInRound ?? count) < count / 100 - 1, "the stalled socket was cut off while delivery to alice went on")

            // The stalled socket was cut off: reading it now ends in a close, and presence says offline.
            let (bytes, closed) = try await stalled.drain(timeout: .seconds(10))
            #expect(closed, "the server closed the stalled socket after \(bytes) bytes")
            #expect(bytes < count * 3000, "the stalled socket did not get everything")
            if !slothWentOffline {
                let offline = try await aliceSocket.next("presence", skipping: ["message"])
                #expect(offline["userId"].string == sloth.id && offline["status"].string == "offline")
            }
            let presence = try await client.request(.get, "/api/v1/presence?userIds=\(sloth.id)", token: alice.accessToken)
            #expect(presence.json["presence"][0]["status"].string == "offline")
            await aliceSocket.close()
            await bobSocket.close()
        }
    }

    @Test("malformed, mistyped, unknown and binary frames get error frames, and the socket keeps working")
    func hostileFrames() async throws {
        try await TestApp.run(.live) { client in
            let alice = try await client.register("alice")
            let group = try await client.createGroup(alice)
            let socket = try await WSTestClient.ready(port: client.port, token: alice.accessToken)
            let frames: [(String, String)] = [
                ("{", "invalid_frame"),
                ("null", "invalid_frame"),
                ("[1,2,3]", "invalid_frame"),
                (#""just a string""#, "invalid_frame"),
                (#"{"no_type":true}"#, "invalid_frame"),
                (#"{"type":42}"#, "invalid_frame"),
                (#"{"type":"send","conversationId":12,"body":"x"}"#, "invalid_frame"),
                (#"{"type":"read","conversationId":"\#(group)","seq":"seven"}"#, "invalid_frame"),
                (#"{"type":"read","conversationId":"\#(group)"}"#, "invalid_frame"),
                (#"{"type":"typing","conversationId":"\#(group)","state":"maybe"}"#, "invalid_frame"),
                (#"{"type":"sync","cursors":[1]}"#, "invalid_frame"),
                (#"{"type":"sync"}"#, "invalid_frame"),
                (#"{"type":"teleport"}"#, "unknown_type"),
                (#"{"type":"auth","token":"x"}"#, "already_authenticated"),
                (String(repeating: "[", count: 10_000), "invalid_frame"),
            ]
            for (text, code) in frames {
                try await socket.send(text)
                let reply = try await socket.next()
                #expect(reply["type"].string == "error", "\(text.prefix(40))")
                #expect(reply["code"].string == code, "\(text.prefix(40)): \(reply)")
            }
            try await socket.sendBinary([0x00, 0xFF, 0x10])
            #expect(try await socket.next()["code"].string == "binary_not_supported")

            // Still serving: a real send works on the same socket.
            try await socket.send(#"{"type":"send","conversationId":"\#(group)","clientMsgId":"ok","body":"still alive"}"#)
            #expect(try await socket.next("ack", skipping: ["message"])["message"]["body"].string == "still alive")
            await socket.close()
        }
    }

    @Test("oversized frames, protocol violations and floods close the offending socket cleanly; others are unaffected")
    func closesOffenders() async throws {
        try await TestApp.run(.live, configure: { $0.rateLimits.webSocketFrames = .init(name: "ws_frames", burst: 20, perSecond: 5) }) { client in
            let alice = try await client.register("alice")
            let bob = try await client.register("bob")
            let group = try await client.createGroup(alice, members: [bob])
            let bystander = try await WSTestClient.ready(port: client.port, token: bob.accessToken)

            // A 100 KB text frame, over the 64 KB limit: closed with 1009 (message too big).
            let huge = try await WSTestClient.ready(port: client.port, token: alice.accessToken)
            try await huge.send(#"{"type":"send","conversationId":"\#(group)","body":"\#(String(repeating: "y", count: 100_000))"}"#)
            #expect(try await huge.closed() == 1009)

            // A frame header announcing 2^40 bytes, and a reserved opcode: both are protocol errors.
            for bytes in [
                RawWebSocket.frame(opcode: 0x1, payload: [], declaredLength: 1 << 40),
                RawWebSocket.frame(opcode: 0x3, payload: [1, 2, 3]),
            ] {
                let (raw, status) = try await RawWebSocket.connect(port: client.port, token: alice.accessToken)
                #expect(status.contains("101"))
                try await raw.send(bytes)
                let (_, closed) = try await raw.drain(timeout: .seconds(10))
                #expect(closed, "the server closed the connection")
                raw.close()
            }

            // A flood far past the frame budget: rate-limit errors, then a policy close.
            let flooder = try await WSTestClient.ready(port: client.port, token: alice.accessToken)
            for _ in 0..<200 { try await flooder.send(#"{"type":"ping"}"#) }
            var limited = 0
            var closeCode: Int?
            while closeCode == nil {
                switch try await flooder.mailbox.take(timeout: .seconds(10), what: "flood replies") {
                case .frame(let frame): if frame["code"].string == "rate_limited" { limited += 1 }
                case .closed(let code): closeCode = code
                }
            }
            #expect(limited > 0)
            #expect(closeCode == 1008)

            // The bystander never noticed.
            _ = try await client.send(alice, group, "all good")
            #expect(try await bystander.next("message", skipping: ["presence"])["message"]["body"].string == "all good")
            await bystander.close()
        }
    }
}

@Suite("Gateway heartbeats")
struct GatewayHeartbeatTests {
    @Test("a peer that stops answering pings is closed and goes offline")
    func heartbeatLapse() async throws {
        try await TestApp.run(.live, configure: { $0.gateway.heartbeatSeconds = 2 }) { client in
            let alice = try await client.register("alice")
            let ghost = try await client.register("ghost")
            _ = try await client.createGroup(alice, members: [ghost])
            let aliceSocket = try await WSTestClient.ready(port: client.port, token: alice.accessToken)
            // The raw socket completes the upgrade and then never reads, so never answers a ping.
            let (raw, status) = try await RawWebSocket.connect(port: client.port, token: ghost.accessToken)
            defer { raw.close() }
            #expect(status.contains("101"))
            let online = try await aliceSocket.next("presence", skipping: [])
            #expect(online["userId"].string == ghost.id && online["status"].string == "online")
            let offline = try await aliceSocket.next("presence", skipping: [], timeout: .seconds(15))
            #expect(offline["userId"].string == ghost.id && offline["status"].string == "offline")
            let (_, closed) = try await raw.drain(timeout: .seconds(10))
            #expect(closed)
            // Alice answers pings (her client library does), so she is still connected.
            try await aliceSocket.send(#"{"type":"ping"}"#)
            #expect(try await aliceSocket.next()["type"].string == "pong")
            await aliceSocket.close()
        }
    }
}
