import Foundation
import Testing

@testable import ParleyCore

/// Swift Testing has an `Attachment` too: this file means Parley's.
private typealias Attachment = ParleyCore.Attachment

@Suite("Hand-written event JSON")
struct JSONWriterTests {
    @Test("dates read exactly as the API's encoder writes them, across years, leap days and millisecond edges")
    func dates() {
        let samples: [Double] = [
            0, 0.001, 0.999, 59.999, 86_399.999, 951_782_400, 951_868_799.5, 1_709_164_800.123, 1_798_761_599.999, 1_796_236_800.042,
            4_102_444_800, 253_402_300_799.999,
        ]
        for seconds in samples + (0..<200).map({ _ in Double.random(in: 0..<4_102_444_800) }) {
            let date = Date(timeIntervalSince1970: seconds).truncatedToMillis
            var json = JSONWriter()
            json.date(date)
            #expect(String(decoding: json.bytes, as: UTF8.self) == "\"\(date.formatted(WireJSON.dateStyle))\"", "\(seconds)")
        }
    }

    @Test("message.created carries the message as the REST API encodes it, whatever the body holds")
    func messageCreated() throws {
        let bodies = [
            "plain", "quotes \" and \\ backslash", "lines\nand\ttabs\r", "controls \u{01}\u{1f}\u{08}\u{0c}", "emoji 👍🏽 and RTL \u{202e}", "</script>",
            "",
        ]
        for (index, body) in bodies.enumerated() {
            // Every other message carries the later fields: edited, a reply, mentions, reactions and attachments
            // (a deleted one has its body erased).
            let full = index % 2 == 1
            let message = Message(
                id: .v7(), conversationID: .v7(), seq: Int64(index + 1), senderID: .v7(), body: body,
                clientMsgID: index % 2 == 0 ? "c\"\(index)" : nil,
                createdAt: .now, editedAt: full ? .now : nil, deletedAt: body.isEmpty ? .now : nil,
                replyTo: full ? MessageReference(id: .v7(), seq: 1, senderID: .v7(), preview: "quoted \"\(body)\"") : nil,
                mentions: full ? [.v7(), .v7()] : [],
                reactions: full
                    ? [ReactionSummary(emoji: "👍🏽", count: 3, userIDs: [.v7(), .v7()]), ReactionSummary(emoji: "❤️", count: 1, userIDs: [.v7()])] : [],
                attachments: full
                    ? [
                        Attachment(
                            id: .v7(), uploaderID: .v7(), name: "photo \"\(index)\" ✓.jpg", contentType: "image/jpeg", size: 123_456, width: 800,
                            height: 600, hasThumbnail: true, createdAt: .now),
                        Attachment(id: .v7(), uploaderID: .v7(), name: "notes.txt", contentType: "text/plain", size: 0, createdAt: .now),
                    ] : [])
            let event = try StreamEvent.messageCreated(message, node: "node \"a\"")
            struct Payload: Encodable { var message: MessageDTO }
            var truncated = message
            truncated.createdAt = message.createdAt.truncatedToMillis
            truncated.editedAt = message.editedAt?.truncatedToMillis
            truncated.deletedAt = message.deletedAt?.truncatedToMillis
            let expected =
                try JSONSerialization.jsonObject(with: WireJSON.encoder.encode(Payload(message: MessageDTO(message: truncated)))) as? NSDictionary
            let actual = try JSONSerialization.jsonObject(with: Data(event.data)) as? NSDictionary
            #expect(actual == expected, "body \(body.debugDescription)")
            let envelope = try #require(try JSONSerialization.jsonObject(with: Data(event.envelope())) as? [String: Any])
            #expect(envelope["node"] as? String == "node \"a\"")
            #expect(envelope["type"] as? String == "message.created")
            #expect((envelope["seq"] as? NSNumber)?.int64Value == Int64(index + 1))
            #expect((envelope["data"] as? NSDictionary) == expected)
        }
    }
}
