import Foundation
import NIOCore
import ParleyCore
import Testing

@testable import ParleyServer

/// Swift Testing has an `Attachment` too: this file means Parley's.
private typealias Attachment = ParleyCore.Attachment

/// The frames that carry a message are written by hand; clients must not be able to tell.
@Suite("Hand-written message frames")
struct FrameJSONTests {
    private struct Ack: Encodable {
        let type = "ack"
        var clientMsgId: String?
        var message: MessageDTO
    }

    private struct MessageFrame: Encodable {
        let type = "message"
        var message: MessageDTO
    }

    private struct Updated: Encodable {
        let type = "updated"
        var change: String
        var message: MessageDTO
        var changeSeq: Int64
    }

    private static func object(_ buffer: ByteBuffer) throws -> NSDictionary {
        try #require(try JSONSerialization.jsonObject(with: Data(buffer.readableBytesView)) as? NSDictionary)
    }

    private static func object(_ value: some Encodable) throws -> NSDictionary {
        try #require(try JSONSerialization.jsonObject(with: WireJSON.encoder.encode(value)) as? NSDictionary)
    }

    private static func messages() -> [Message] {
        let bodies = ["plain", "quotes \" and \\ / slash", "lines\nand\ttabs\r", "controls \u{01}\u{1f}", "emoji 👍🏽 RTL \u{202e}", "</script>", ""]
        let now = Date.now.truncatedToMillis
        return bodies.enumerated().map { index, body in
            let full = index % 2 == 1
            return Message(
                id: .v7(), conversationID: .v7(), seq: Int64(index + 1), senderID: .v7(), body: body,
                clientMsgID: index % 3 == 0 ? nil : "c\"\(index)", createdAt: now, editedAt: full ? now : nil, deletedAt: body.isEmpty ? now : nil,
                replyTo: full ? MessageReference(id: .v7(), seq: 1, senderID: .v7(), preview: "quoted \"\(body)\"") : nil,
                mentions: full ? [.v7()] : [],
                reactions: full ? [ReactionSummary(emoji: "👍🏽", count: 2, userIDs: [.v7(), .v7()])] : [],
                attachments: full
                    ? [
                        Attachment(
                            id: .v7(), uploaderID: .v7(), name: "a \"b\".png", contentType: "image/png", size: 42, width: 4, height: 3,
                            hasThumbnail: true, createdAt: now)
                    ] : [])
        }
    }

    @Test("ack, message and updated frames read exactly as the JSON encoder writes them")
    func framesMatchEncoder() throws {
        for message in Self.messages() {
            let dto = MessageDTO(message: message)
            for clientMsgID in [message.clientMsgID, nil] {
                #expect(
                    try Self.object(ServerFrame.ack(clientMsgID: clientMsgID, message)) == Self.object(Ack(clientMsgId: clientMsgID, message: dto)))
            }
            #expect(try Self.object(ServerFrame.message(message)) == Self.object(MessageFrame(message: dto)))
            for kind in MessageChangeKind.allCases {
                #expect(
                    try Self.object(ServerFrame.updated(kind, message, changeSeq: 77))
                        == Self.object(Updated(change: kind.rawValue, message: dto, changeSeq: 77)))
            }
        }
    }
}
