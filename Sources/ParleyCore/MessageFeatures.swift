import Foundation

/// The message a reply quotes, as it reads now: `preview` is the start of its current body (empty
/// once it is deleted).
public struct MessageReference: Sendable, Equatable, Codable {
    public var id: UUID
    public var seq: Int64
    public var senderID: UUID
    public var preview: String

    /// Longest preview, in characters.
    public static let previewLength = 140

    public init(id: UUID, seq: Int64, senderID: UUID, preview: String) {
        self.id = id
        self.seq = seq
        self.senderID = senderID
        self.preview = preview
    }

    /// The preview of `body`: its first `previewLength` characters.
    public static func preview(of body: String) -> String {
        body.count <= previewLength ? body : String(body.prefix(previewLength))
    }
}

/// One emoji's reactions to a message.
public struct ReactionSummary: Sendable, Equatable, Codable {
    public var emoji: String
    public var count: Int
    /// Who reacted, earliest first, at most `listedUsers`.
    public var userIDs: [UUID]

    public static let listedUsers = 20

    public init(emoji: String, count: Int, userIDs: [UUID]) {
        self.emoji = emoji
        self.count = count
        self.userIDs = userIDs
    }

    /// Summaries from individual reactions given in the order they were made: one per emoji, in the
    /// order each emoji was first used.
    public static func summarize(_ reactions: some Sequence<(emoji: String, userID: UUID)>) -> [ReactionSummary] {
        var summaries: [ReactionSummary] = []
        var index: [String: Int] = [:]
        for (emoji, userID) in reactions {
            if let i = index[emoji] {
                summaries[i].count += 1
                if summaries[i].userIDs.count < listedUsers { summaries[i].userIDs.append(userID) }
            } else {
                index[emoji] = summaries.count
                summaries.append(ReactionSummary(emoji: emoji, count: 1, userIDs: [userID]))
            }
        }
        return summaries
    }
}

/// What happened to a message after it was sent.
public enum MessageChangeKind: String, Sendable, Codable, CaseIterable {
    case edited
    case deleted
    case reactions
}

/// A stored change to a message: its state after the change, and the conversation's change
/// sequence number the change took.
public struct MessageChange: Sendable, Equatable {
    public var kind: MessageChangeKind
    public var message: Message
    public var changeSeq: Int64
    /// The conversation's members when the change committed.
    public var recipients: [UUID]

    public init(kind: MessageChangeKind, message: Message, changeSeq: Int64, recipients: [UUID]) {
        self.kind = kind
        self.message = message
        self.changeSeq = changeSeq
        self.recipients = recipients
    }
}

/// Changes to messages a client missed, oldest change first, each message once in its current
/// state with the kind of its latest change.
public struct ChangePage: Sendable, Equatable {
    public var changes: [(kind: MessageChangeKind, message: Message)]
    public var hasMore: Bool
    /// The conversation's change sequence, read before the changes: a client that received every
    /// page up to here has every change up to this number.
    public var conversationChangeSeq: Int64

    public init(changes: [(kind: MessageChangeKind, message: Message)], hasMore: Bool, conversationChangeSeq: Int64) {
        self.changes = changes
        self.hasMore = hasMore
        self.conversationChangeSeq = conversationChangeSeq
    }

    /// The cursor a client holds after this page: the last change it got when more follow, else
    /// the conversation's change sequence.
    public var nextCursor: Int64 {
        hasMore ? (changes.last?.message.changeSeq ?? conversationChangeSeq) : conversationChangeSeq
    }

    public static func == (lhs: ChangePage, rhs: ChangePage) -> Bool {
        lhs.hasMore == rhs.hasMore && lhs.conversationChangeSeq == rhs.conversationChangeSeq
            && lhs.changes.map(\.kind) == rhs.changes.map(\.kind) && lhs.changes.map(\.message) == rhs.changes.map(\.message)
    }
}

/// An edit of a message's body by `editorID`, who must be its sender.
public struct MessageEdit: Sendable {
    public var conversationID: UUID
    public var messageID: UUID
    public var editorID: UUID
    public var body: String
    public var mentionedUsernames: [String]
    public var at: Date

    public init(conversationID: UUID, messageID: UUID, editorID: UUID, body: String, at: Date) {
        self.conversationID = conversationID
        self.messageID = messageID
        self.editorID = editorID
        self.body = body
        self.mentionedUsernames = Mentions.usernames(in: body)
        self.at = at
    }
}

/// `@username` mentions in a message body.
public enum Mentions {
    /// At most this many distinct usernames of one body are resolved.
    public static let maxPerMessage = 50

    private static func isUsernameByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "-"):
            true
        default: false
        }
    }

    /// The distinct usernames written as `@username` in `body`, lower-cased, in order of first
    /// appearance. An `@` inside a word (an e-mail address) is not a mention; trailing `.` and `-`
    /// (the end of a sentence) are not part of the name.
    public static func usernames(in body: String) -> [String] {
        let bytes = body.utf8
        guard bytes.contains(UInt8(ascii: "@")) else { return [] }
        var names: [String] = []
        var seen = Set<String>()
        var previous: UInt8 = UInt8(ascii: " ")
        var index = bytes.startIndex
        while index != bytes.endIndex {
            let byte = bytes[index]
            if byte == UInt8(ascii: "@") && !isUsernameByte(previous) && previous != UInt8(ascii: "@") {
                var end = bytes.index(after: index)
                while end != bytes.endIndex, isUsernameByte(bytes[end]) { end = bytes.index(after: end) }
                var name = Array(bytes[bytes.index(after: index)..<end])
                while let last = name.last, last == UInt8(ascii: ".") || last == UInt8(ascii: "-") { name.removeLast() }
                let username = String(decoding: name, as: UTF8.self).lowercased()
                if (3...32).contains(name.count), seen.insert(username).inserted {
                    names.append(username)
                    if names.count == maxPerMessage { break }
                }
                previous = bytes[bytes.index(before: end)]
                index = end
                continue
            }
            previous = byte
            index = bytes.index(after: index)
        }
        return names
    }
}

/// Reaction emoji.
public enum Emoji {
    /// One emoji, as a reaction: a single grapheme (a flag, a skin tone, a family joined with
    /// zero-width joiners all count as one) that is an emoji. A text-style emoji without its
    /// variation selector (`❤`) is stored with it (`❤️`), so both spellings are one reaction.
    public static func reaction(_ raw: String) throws -> String {
        let invalid = ParleyError.invalid("A reaction is a single emoji.", code: "invalid_emoji")
        guard raw.utf8.count <= 64, raw.count == 1, let character = raw.first else { throw invalid }
        let scalars = Array(character.unicodeScalars)
        if scalars.contains(where: { $0.properties.isEmojiPresentation }) { return raw }
        guard let first = scalars.first, first.properties.isEmoji, first.value > 0x7F || scalars.contains("\u{20E3}") else {
            throw invalid
        }
        if scalars.count == 1 { return raw + "\u{FE0F}" }
        guard scalars.contains("\u{FE0F}") || scalars.contains("\u{20E3}") else { throw invalid }
        return raw
    }
}

/// A full-text search over messages: words (all must match), `word*` prefixes and `"quoted
/// phrases"`. Words are what the stores index: runs of letters and digits, compared without case
/// (and, on SQLite, without diacritics).
public struct SearchQuery: Sendable, Equatable {
    public enum Term: Sendable, Equatable {
        /// Consecutive words; a single word when the term was not quoted. `prefix`: the last word
        /// matches any word it begins.
        case words([String], prefix: Bool)
    }

    public var terms: [Term]

    /// Longest query accepted, in bytes, and most terms.
    public static let maxBytes = 256
    public static let maxTerms = 16

    public init(parsing raw: String) throws {
        let text = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !text.isEmpty else { throw ParleyError.invalid("q must not be empty.", code: "invalid_query") }
        guard text.utf8.count <= Self.maxBytes else {
            throw ParleyError.invalid("q must be at most \(Self.maxBytes) bytes.", code: "invalid_query")
        }
        var terms: [Term] = []
        // Quoted parts are phrases; the parts between them are single words.
        for (index, part) in text.split(separator: "\"", omittingEmptySubsequences: false).enumerated() {
            if index % 2 == 1 {
                let words = Self.words(part)
                if !words.isEmpty { terms.append(.words(words, prefix: false)) }
            } else {
                for token in part.split(whereSeparator: \.isWhitespace) {
                    let words = Self.words(token)
                    guard !words.isEmpty else { continue }
                    // "e-mail" is the phrase "e mail", as the index holds it.
                    terms.append(.words(words, prefix: token.hasSuffix("*")))
                }
            }
        }
        guard !terms.isEmpty else {
            throw ParleyError.invalid("q must contain a word of letters or digits.", code: "invalid_query")
        }
        guard terms.count <= Self.maxTerms else {
            throw ParleyError.invalid("q may have at most \(Self.maxTerms) terms.", code: "invalid_query")
        }
        self.terms = terms
    }

    /// Runs of letters and digits, lower-cased.
    static func words(_ text: Substring) -> [String] {
        var words: [String] = []
        var current = ""
        for character in text {
            if character.isLetter || character.isNumber {
                current.append(character)
            } else if !current.isEmpty {
                words.append(current.lowercased())
                current = ""
            }
        }
        if !current.isEmpty { words.append(current.lowercased()) }
        return words
    }
}

/// One search result.
public struct SearchHit: Sendable, Equatable {
    public var message: Message
    /// The matching part of the body with HTML special characters escaped and each match in
    /// `<mark>…</mark>`.
    public var highlight: String

    public init(message: Message, highlight: String) {
        self.message = message
        self.highlight = highlight
    }

    /// Private-use characters the stores put around matches; `highlight(marked:)` turns them into
    /// `<mark>` tags after escaping.
    public static let openMark: Character = "\u{E000}"
    public static let closeMark: Character = "\u{E001}"

    /// Escapes `marked` for HTML and turns the stores' match markers into `<mark>` tags.
    public static func highlight(marked: String) -> String {
        var html = ""
        html.reserveCapacity(marked.utf8.count + 32)
        for character in marked {
            switch character {
            case openMark: html += "<mark>"
            case closeMark: html += "</mark>"
            case "&": html += "&amp;"
            case "<": html += "&lt;"
            case ">": html += "&gt;"
            case "\"": html += "&quot;"
            case "'": html += "&#39;"
            default: html.append(character)
            }
        }
        return html
    }
}

public struct SearchPage: Sendable, Equatable {
    public var results: [SearchHit]
    public var hasMore: Bool

    public init(results: [SearchHit], hasMore: Bool) {
        self.results = results
        self.hasMore = hasMore
    }
}

/// A search as a store runs it.
public struct SearchRequest: Sendable {
    public var query: SearchQuery
    /// Only conversations this user is a member of.
    public var userID: UUID
    public var conversationID: UUID?
    /// Only messages older than this message (by id, which orders by time).
    public var before: UUID?
    public var limit: Int

    public init(query: SearchQuery, userID: UUID, conversationID: UUID?, before: UUID?, limit: Int) {
        self.query = query
        self.userID = userID
        self.conversationID = conversationID
        self.before = before
        self.limit = limit
    }
}

extension ParleyError {
    public static let messageNotFound = ParleyError.notFound("Message not found.", code: "message_not_found")
    public static let messageDeleted = ParleyError.conflict("The message was deleted.", code: "message_deleted")
    public static let notMessageSender = ParleyError.forbidden("Only the sender can edit a message.", code: "not_message_sender")
    public static let invalidReply = ParleyError.invalid(
        "replyToId must name a message of the same conversation.", code: "invalid_reply")

    public static func tooManyReactions(_ limit: Int) -> ParleyError {
        ParleyError.conflict("A message can have at most \(limit) different reactions.", code: "too_many_reactions")
    }
}
