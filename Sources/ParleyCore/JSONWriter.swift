import Foundation

/// Writes JSON straight into a byte array, for the shapes written once or more per message sent:
/// the `message.created` event inside the store's write transaction, and the gateway's `ack` and
/// `message` frames, where Foundation's `JSONEncoder` cost more than the insert itself. Produces what `WireJSON.encoder` produces for the same values:
/// strings escaped per RFC 8259, dates as RFC 3339 UTC with milliseconds.
public struct JSONWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 256) {
        bytes.reserveCapacity(capacity)
    }

    public mutating func raw(_ text: StaticString) {
        text.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    public mutating func raw(_ other: [UInt8]) {
        bytes.append(contentsOf: other)
    }

    /// `"key":` (keys are ASCII identifiers: no escaping).
    public mutating func key(_ key: StaticString) {
        bytes.append(UInt8(ascii: "\""))
        raw(key)
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
    }

    public mutating func comma() {
        bytes.append(UInt8(ascii: ","))
    }

    public mutating func null() {
        raw("null")
    }

    public mutating func integer(_ value: Int64) {
        bytes.append(contentsOf: String(value).utf8)
    }

    public mutating func string(_ value: String) {
        bytes.append(UInt8(ascii: "\""))
        let hex: StaticString = "0123456789abcdef"
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "\""): raw("\\\"")
            case UInt8(ascii: "\\"): raw("\\\\")
            case UInt8(ascii: "\n"): raw("\\n")
            case UInt8(ascii: "\r"): raw("\\r")
            case UInt8(ascii: "\t"): raw("\\t")
            case 0x08: raw("\\b")
            case 0x0C: raw("\\f")
            case 0..<0x20:
                raw("\\u00")
                hex.withUTF8Buffer { digits in
                    bytes.append(digits[Int(byte >> 4)])
                    bytes.append(digits[Int(byte & 0x0F)])
                }
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    public mutating func string(_ value: String?) {
        if let value { string(value) } else { null() }
    }

    public mutating func uuid(_ value: UUID) {
        bytes.append(UInt8(ascii: "\""))
        bytes.append(contentsOf: value.lowercased.utf8)
        bytes.append(UInt8(ascii: "\""))
    }

    /// `"2026-12-02T16:20:00.123Z"`: UTC, milliseconds truncated, computed the way Foundation's
    /// ISO 8601 format style computes them (from the seconds since 2001 and their fraction), so
    /// the event shows the same digits as the REST API for the same `Date`.
    public mutating func date(_ date: Date) {
        let reference = date.timeIntervalSinceReferenceDate
        let whole = reference.rounded(.down)
        let millis = (Int64(whole) + 978_307_200) * 1000 + Int64((reference - whole) * 1000)
        var days = millis >= 0 ? millis / 86_400_000 : (millis - 86_399_999) / 86_400_000
        let ofDay = millis - days * 86_400_000
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        days += 719_468
        let era = (days >= 0 ? days : days - 146_096) / 146_097
        let dayOfEra = days - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        bytes.append(UInt8(ascii: "\""))
        digits(year, 4)
        bytes.append(UInt8(ascii: "-"))
        digits(month, 2)
        bytes.append(UInt8(ascii: "-"))
        digits(day, 2)
        bytes.append(UInt8(ascii: "T"))
        digits(ofDay / 3_600_000, 2)
        bytes.append(UInt8(ascii: ":"))
        digits(ofDay / 60_000 % 60, 2)
        bytes.append(UInt8(ascii: ":"))
        digits(ofDay / 1000 % 60, 2)
        bytes.append(UInt8(ascii: "."))
        digits(ofDay % 1000, 3)
        bytes.append(UInt8(ascii: "Z"))
        bytes.append(UInt8(ascii: "\""))
    }

    private mutating func digits(_ value: Int64, _ width: Int) {
        var divisor: Int64 = 1
        for _ in 1..<width { divisor *= 10 }
        var rest = value
        while divisor > 0 {
            bytes.append(UInt8(ascii: "0") + UInt8(rest / divisor % 10))
            rest %= divisor
            divisor /= 10
        }
    }
}

extension JSONWriter {
    /// A message object, with the fields and in the order `MessageDTO` encodes them.
    public mutating func message(_ message: Message) {
        raw("{")
        key("id")
        uuid(message.id)
        comma()
        key("conversationId")
        uuid(message.conversationID)
        comma()
        key("seq")
        integer(message.seq)
        comma()
        key("senderId")
        uuid(message.senderID)
        comma()
        key("body")
        string(message.body)
        comma()
        key("clientMsgId")
        string(message.clientMsgID)
        comma()
        key("createdAt")
        date(message.createdAt.truncatedToMillis)
        comma()
        key("editedAt")
        if let editedAt = message.editedAt { date(editedAt.truncatedToMillis) } else { null() }
        comma()
        key("deletedAt")
        if let deletedAt = message.deletedAt { date(deletedAt.truncatedToMillis) } else { null() }
        comma()
        key("replyTo")
        if let reply = message.replyTo {
            raw("{")
            key("id")
            uuid(reply.id)
            comma()
            key("seq")
            integer(reply.seq)
            comma()
            key("senderId")
            uuid(reply.senderID)
            comma()
            key("preview")
            string(reply.preview)
            raw("}")
        } else {
            null()
        }
        comma()
        key("mentions")
        uuids(message.mentions)
        comma()
        key("reactions")
        raw("[")
        for (index, reaction) in message.reactions.enumerated() {
            if index > 0 { comma() }
            raw("{")
            key("emoji")
            string(reaction.emoji)
            comma()
            key("count")
            integer(Int64(reaction.count))
            comma()
            key("userIds")
            uuids(reaction.userIDs)
            raw("}")
        }
        raw("]")
        comma()
        key("attachments")
        raw("[")
        for (index, attachment) in message.attachments.enumerated() {
            if index > 0 { comma() }
            self.attachment(attachment)
        }
        raw("]")
        raw("}")
    }

    /// An attachment in its REST shape (`AttachmentDTO`): metadata and URLs, never bytes.
    public mutating func attachment(_ attachment: Attachment) {
        raw("{")
        key("id")
        uuid(attachment.id)
        comma()
        key("name")
        string(attachment.name)
        comma()
        key("contentType")
        string(attachment.contentType)
        comma()
        key("size")
        integer(attachment.size)
        if let width = attachment.width, let height = attachment.height {
            comma()
            key("width")
            integer(Int64(width))
            comma()
            key("height")
            integer(Int64(height))
        }
        if let thumbnailURL = attachment.thumbnailURL {
            comma()
            key("thumbnailUrl")
            string(thumbnailURL)
        }
        comma()
        key("url")
        string(attachment.url)
        raw("}")
    }

    /// A JSON array of ids.
    public mutating func uuids(_ ids: [UUID]) {
        raw("[")
        for (index, id) in ids.enumerated() {
            if index > 0 { comma() }
            uuid(id)
        }
        raw("]")
    }
}
