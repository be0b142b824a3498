import Foundation

public struct User: Sendable, Equatable, Codable {
    public var id: UUID
    public var username: String
    public var email: String
    public var displayName: String
    public var createdAt: Date

    public init(id: UUID, username: String, email: String, displayName: String, createdAt: Date) {
        self.id = id
        self.username = username
        self.email = email
        self.displayName = displayName
        self.createdAt = createdAt
    }
}

/// A user together with the password hash, only for the login path.
public struct UserCredentials: Sendable {
    public var user: User
    public var passwordHash: String

    public init(user: User, passwordHash: String) {
        self.user = user
        self.passwordHash = passwordHash
    }
}

public struct NewUser: Sendable {
    public var id: UUID
    public var username: String
    public var email: String
    public var displayName: String
    public var passwordHash: String
    public var createdAt: Date

    public init(id: UUID = .v7(), username: String, email: String, displayName: String, passwordHash: String, createdAt: Date = .now) {
        self.id = id
        self.username = username
        self.email = email
        self.displayName = displayName
        self.passwordHash = passwordHash
        self.createdAt = createdAt
    }
}

/// A login session: one refresh-token family.
public struct Session: Sendable, Equatable {
    public var id: UUID
    public var userID: UUID
    public var createdAt: Date
    public var expiresAt: Date
    public var revokedAt: Date?
    /// The client's User-Agent at login (at most 256 characters), so that people can tell their
    /// sessions apart.
    public var userAgent: String?
    /// When its refresh token was last rotated (nil: never since login).
    public var lastUsedAt: Date?

    public init(id: UUID, userID: UUID, createdAt: Date, expiresAt: Date, revokedAt: Date?, userAgent: String? = nil, lastUsedAt: Date? = nil) {
        self.id = id
        self.userID = userID
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.revokedAt = revokedAt
        self.userAgent = userAgent
        self.lastUsedAt = lastUsedAt
    }

    public func isActive(at now: Date) -> Bool { revokedAt == nil && expiresAt > now }
}

/// Failed logins recorded against one login key (an account, or a login that names none), for the
/// per-account delay after repeated failures.
public struct LoginFailures: Sendable, Equatable {
    /// Attempts in a row that did not succeed (since the last success, or since they were forgotten).
    public var count: Int
    public var lastFailureAt: Date
    /// No attempt is checked before this time.
    public var nextAllowedAt: Date

    public init(count: Int, lastFailureAt: Date, nextAllowedAt: Date) {
        self.count = count
        self.lastFailureAt = lastFailureAt
        self.nextAllowedAt = nextAllowedAt
    }
}

/// What `reserveLoginAttempt` decided.
public enum LoginAttempt: Sendable, Equatable {
    /// The attempt may be checked; it is already counted as the `count`th failure in a row (a success
    /// clears the count).
    case counted(Int)
    /// The key must wait: nothing was counted.
    case delayed(until: Date)
}

public enum RefreshOutcome: Sendable, Equatable {
    /// The presented token was current; it is now spent and the new one is stored.
    case rotated(Session)
    /// The presented token had already been rotated: the whole session was revoked.
    case reused(Session)
    /// Unknown token, or its session is expired or revoked.
    case invalid
}

public enum ConversationType: String, Sendable, Codable {
    case direct
    case group
}

public enum MemberRole: String, Sendable, Codable, Comparable {
    case owner
    case admin
    case member

    var rank: Int {
        switch self {
        case .owner: 2
        case .admin: 1
        case .member: 0
        }
    }

    public static func < (lhs: MemberRole, rhs: MemberRole) -> Bool { lhs.rank < rhs.rank }
}

public struct Member: Sendable, Equatable, Codable {
    public var userID: UUID
    public var role: MemberRole
    public var readSeq: Int64
    public var deliveredSeq: Int64
    public var joinedAt: Date

    public init(userID: UUID, role: MemberRole, readSeq: Int64, deliveredSeq: Int64, joinedAt: Date) {
        self.userID = userID
        self.role = role
        self.readSeq = readSeq
        self.deliveredSeq = deliveredSeq
        self.joinedAt = joinedAt
    }
}

public struct Conversation: Sendable, Equatable, Codable {
    public var id: UUID
    public var type: ConversationType
    public var name: String?
    public var hasPasscode: Bool
    public var lastSeq: Int64
    public var lastMessage: Message?
    public var members: [Member]
    public var createdAt: Date
    public var updatedAt: Date
    /// The conversation's change sequence: how many edits, deletions and reaction changes it has had.
    public var changeSeq: Int64
    /// Unread mentions of the user the conversation was listed for (`conversations(for:)` only).
    public var mentionCount: Int64

    public init(
        id: UUID,
        type: ConversationType,
        name: String?,
        hasPasscode: Bool,
        lastSeq: Int64,
        lastMessage: Message?,
        members: [Member],
        createdAt: Date,
        updatedAt: Date,
        changeSeq: Int64 = 0,
        mentionCount: Int64 = 0
    ) {
        self.id = id
        self.type = type
        self.name = name
        self.hasPasscode = hasPasscode
        self.lastSeq = lastSeq
        self.lastMessage = lastMessage
        self.members = members
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.changeSeq = changeSeq
        self.mentionCount = mentionCount
    }

    public func member(_ userID: UUID) -> Member? { members.first { $0.userID == userID } }

    /// Messages after the viewer's read watermark.
    public func unreadCount(for userID: UUID) -> Int64 {
        max(0, lastSeq - (member(userID)?.readSeq ?? lastSeq))
    }
}

public struct Message: Sendable, Equatable, Codable {
    public var id: UUID
    public var conversationID: UUID
    public var seq: Int64
    public var senderID: UUID
    public var body: String
    public var clientMsgID: String?
    public var createdAt: Date
    /// When the body was last edited.
    public var editedAt: Date?
    /// When the message was deleted; its body is then empty.
    public var deletedAt: Date?
    /// The message this one replies to, as it reads now.
    public var replyTo: MessageReference?
    /// Members mentioned with `@username`, in the order they first appear.
    public var mentions: [UUID]
    /// Reactions, one entry per emoji in the order each was first used.
    public var reactions: [ReactionSummary]
    /// Files sent with the message, in the order the sender listed them (none once deleted).
    public var attachments: [Attachment]
    /// The conversation's change sequence at this message's latest edit, deletion or reaction
    /// change (0 if it never changed). Not part of the message's JSON; `updated` frames carry it.
    public var changeSeq: Int64

    public init(
        id: UUID, conversationID: UUID, seq: Int64, senderID: UUID, body: String, clientMsgID: String?, createdAt: Date,
        editedAt: Date? = nil, deletedAt: Date? = nil, replyTo: MessageReference? = nil, mentions: [UUID] = [],
        reactions: [ReactionSummary] = [], attachments: [Attachment] = [], changeSeq: Int64 = 0
    ) {
        self.id = id
        self.conversationID = conversationID
        self.seq = seq
        self.senderID = senderID
        self.body = body
        self.clientMsgID = clientMsgID
        self.createdAt = createdAt
        self.editedAt = editedAt
        self.deletedAt = deletedAt
        self.replyTo = replyTo
        self.mentions = mentions
        self.reactions = reactions
        self.attachments = attachments
        self.changeSeq = changeSeq
    }
}

/// A request to append one message; the store assigns the seq.
public struct SendRequest: Sendable {
    public var conversationID: UUID
    public var senderID: UUID
    public var clientMsgID: String?
    public var body: String
    public var messageID: UUID
    public var createdAt: Date
    /// The message this one replies to; it must be in the same conversation.
    public var replyToID: UUID?
    /// The `@username`s in the body (lower-cased, distinct), for the store to resolve to members.
    public var mentionedUsernames: [String]
    /// Uploads of the sender's, not yet sent, to attach (at most `Attachment.maxPerMessage`).
    public var attachmentIDs: [UUID]

    public init(
        conversationID: UUID, senderID: UUID, clientMsgID: String?, body: String, messageID: UUID = .v7(), createdAt: Date = .now,
        replyToID: UUID? = nil, attachmentIDs: [UUID] = []
    ) {
        self.conversationID = conversationID
        self.senderID = senderID
        self.clientMsgID = clientMsgID
        self.body = body
        self.messageID = messageID
        self.createdAt = createdAt
        self.replyToID = replyToID
        self.mentionedUsernames = Mentions.usernames(in: body)
        self.attachmentIDs = attachmentIDs
    }
}

extension SendRequest {
    /// The message this request becomes once the store has given it `seq`, resolved its reply and
    /// mentions and checked its uploads (times kept to the millisecond, as stored). The uploads
    /// come back attached to it.
    public func message(seq: Int64, replyTo: MessageReference? = nil, mentions: [UUID] = [], attachments: [Attachment] = []) -> Message {
        let attached = attachments.map {
            var attachment = $0
            attachment.conversationID = conversationID
            attachment.messageID = messageID
            return attachment
        }
        return Message(
            id: messageID, conversationID: conversationID, seq: seq, senderID: senderID, body: body, clientMsgID: clientMsgID,
            createdAt: createdAt.truncatedToMillis, replyTo: replyTo, mentions: mentions, attachments: attached)
    }
}

public struct SendResult: Sendable, Equatable {
    public var message: Message
    /// True when the clientMsgId had been seen: `message` is the original and nothing new was written.
    public var replayed: Bool
    /// The conversation's members when the message was committed (empty for replays).
    public var recipients: [UUID]

    public init(message: Message, replayed: Bool, recipients: [UUID] = []) {
        self.message = message
        self.replayed = replayed
        self.recipients = recipients
    }
}

/// The outcome of moving a watermark.
public struct WatermarkUpdate: Sendable, Equatable {
    /// The watermark after the update.
    public var value: Int64
    /// False when the watermark was already at or past the requested seq.
    public var advanced: Bool

    public init(value: Int64, advanced: Bool) {
        self.value = value
        self.advanced = advanced
    }
}

public struct MessagePage: Sendable, Equatable {
    public var messages: [Message]
    public var hasMore: Bool

    public init(messages: [Message], hasMore: Bool) {
        self.messages = messages
        self.hasMore = hasMore
    }
}

public enum PageCursor: Sendable, Equatable {
    /// The newest messages.
    case latest
    /// Messages with seq < value, the newest of them.
    case before(Int64)
    /// Messages with seq > value, the oldest of them.
    case after(Int64)
}

public enum Watermark: String, Sendable {
    case read
    case delivered
}
