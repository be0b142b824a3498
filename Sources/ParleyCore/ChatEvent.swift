import Foundation

/// Something that happened which connected clients should hear about. Events travel over the `Bus`
/// between nodes, so they are `Codable`; the gateway turns each into a WebSocket frame.
public enum ChatEvent: Sendable, Equatable, Codable {
    /// A new message (never sent for replays).
    case message(Message)
    /// A message was edited, deleted, or its reactions changed: its state now, and the
    /// conversation's change sequence number the change took.
    case updated(MessageChangeKind, Message, changeSeq: Int64)
    /// A member's delivered or read watermark moved forward.
    case receipt(conversationID: UUID, userID: UUID, kind: Watermark, seq: Int64)
    case typing(conversationID: UUID, userID: UUID, state: TypingState)
    case presence(Presence)
    /// A conversation was created, changed, or the recipient's membership changed.
    case conversation(ConversationChange, Conversation)
    /// A session ended (logout, or refresh-token reuse); its sockets must close.
    case sessionRevoked(sessionID: UUID)
}

public enum TypingState: String, Sendable, Codable {
    case start
    case stop
}

public enum ConversationChange: String, Sendable, Codable {
    /// The recipient is in a new conversation (created with them in it, added, or joined).
    case created
    /// Name, passcode, roles or members changed.
    case updated
    /// The recipient left or was removed.
    case removed
    /// The conversation no longer exists.
    case deleted
}

public struct Presence: Sendable, Equatable, Codable {
    public enum Status: String, Sendable, Codable {
        case online
        case offline
    }

    public var userID: UUID
    public var status: Status
    /// When the user was last connected; nil if never seen.
    public var lastSeenAt: Date?

    public init(userID: UUID, status: Status, lastSeenAt: Date?) {
        self.userID = userID
        self.status = status
        self.lastSeenAt = lastSeenAt
    }
}

extension Watermark: Codable {}

/// An event together with those of its recipients that this node subscribed to.
public struct BusDelivery: Sendable {
    public var event: ChatEvent
    public var recipients: [UUID]

    public init(event: ChatEvent, recipients: [UUID]) {
        self.event = event
        self.recipients = recipients
    }
}
