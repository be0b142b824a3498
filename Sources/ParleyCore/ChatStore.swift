import Foundation
import ServiceLifecycle

/// The source of truth: users, sessions, conversations, members and messages, as one adapter
/// implements it, with its lifecycle.
///
/// Adapters: `SQLiteChatStore` (embedded) and `PostgresChatStore` (cluster). Every adapter runs the
/// same conformance suite (`Tests/ChatStoreConformanceTests`). Authorization is the domain's job
/// (`ChatService`); the store only enforces integrity (uniqueness, membership on send, gapless seq).
///
/// A store is a `Service`: `run()` owns its connections for the life of the node and closes them on
/// graceful shutdown (it is the first service of the group, so it is the last to stop). `migrate()`
/// runs once while `run()` is running, before the node serves.
public protocol ChatStore: AccountStore, ConversationStore, MessageStore, MessageChangeStore, AttachmentStore, OutboxStore, Service {
    /// Brings the schema up to date. Safe to call from several nodes at once.
    func migrate() async throws
    /// Cheap round trip used by readiness checks.
    func ping() async throws
}

/// Users and their sessions.
public protocol AccountStore: Sendable {
    // MARK: Users

    /// Inserts a user. Throws `conflict` with code `username_taken` or `email_taken`.
    func createUser(_ user: NewUser) async throws -> User
    func user(id: UUID) async throws -> User?
    /// Looks a user up by username or email (both stored lower-cased).
    func credentials(login: String) async throws -> UserCredentials?
    /// Users whose username or display name starts with / contains `query`, usernames first.
    func searchUsers(query: String, limit: Int) async throws -> [User]
    func users(ids: [UUID]) async throws -> [User]
    /// Records when a user was last connected (their last socket closed).
    func setLastSeen(userID: UUID, at: Date) async throws
    /// Last-seen times of those of `userIDs` that have one.
    func lastSeen(userIDs: [UUID]) async throws -> [UUID: Date]

    // MARK: Sessions

    func createSession(id: UUID, userID: UUID, refreshTokenHash: String, expiresAt: Date, userAgent: String?, now: Date) async throws -> Session
    func session(id: UUID) async throws -> Session?
    /// A user's live sessions (not revoked, not expired), most recently used first.
    func sessions(userID: UUID, now: Date) async throws -> [Session]
    /// Spends `presentedHash` and stores `newHash` as the session's current refresh token (and
    /// notes the session as used now). Presenting a token that was already spent revokes the
    /// whole session.
    func rotateRefreshToken(presentedHash: String, newHash: String, now: Date) async throws -> RefreshOutcome
    func revokeSession(id: UUID, now: Date) async throws
    /// Stores a new password hash and revokes every live session of the user but `keeping`, in one
    /// transaction. Returns the ids of the sessions it revoked.
    func setPassword(userID: UUID, passwordHash: String, keeping: UUID, now: Date) async throws -> [UUID]

    // MARK: Failed logins (shared by every node, so the delay holds across a cluster)

    func loginFailures(key: String) async throws -> LoginFailures?
    /// Decides and counts a login attempt for `key` in one atomic step, so that attempts made at
    /// the same time (on any node) cannot all slip through one opening: `.delayed` while its
    /// `nextAllowedAt` is in the future (nothing counted), else the attempt is counted up front as
    /// one more failure (starting again from one if the last was before `forgetBefore`) and the next
    /// allowed time becomes `now + delay.seconds(after: count)`. Also drops other keys' records
    /// older than `forgetBefore`.
    func reserveLoginAttempt(key: String, now: Date, forgetBefore: Date, delay: LoginDelay) async throws -> LoginAttempt
    func clearLoginFailures(key: String) async throws
}

extension AccountStore {
    public func createSession(id: UUID, userID: UUID, refreshTokenHash: String, expiresAt: Date, now: Date) async throws -> Session {
        try await createSession(id: id, userID: userID, refreshTokenHash: refreshTokenHash, expiresAt: expiresAt, userAgent: nil, now: now)
    }
}

/// Conversations and their members.
public protocol ConversationStore: Sendable {

    /// Returns the direct conversation between the two users, creating it if needed.
    func findOrCreateDirectConversation(between a: UUID, and b: UUID, now: Date) async throws -> (Conversation, created: Bool)
    /// Creates a group; `ownerID` becomes its owner, `memberIDs` plain members.
    func createGroup(id: UUID, name: String, ownerID: UUID, memberIDs: [UUID], passcodeHash: String?, now: Date) async throws -> Conversation
    func conversation(id: UUID) async throws -> Conversation?
    /// The conversations `userID` is a member of, newest activity first.
    func conversations(for userID: UUID, limit: Int) async throws -> [Conversation]
    func member(conversationID: UUID, userID: UUID) async throws -> Member?
    /// The user ids of a conversation's members (empty if it does not exist).
    func memberIDs(conversationID: UUID) async throws -> [UUID]
    /// Distinct users who share a conversation with `userID`, counting only conversations of at most
    /// `maxGroupSize` members, at most `limit` of them. Used to bound presence fan-out.
    func contacts(of userID: UUID, maxGroupSize: Int, limit: Int) async throws -> [UUID]
    func passcodeHash(conversationID: UUID) async throws -> String?
    /// Updates a group's name and/or passcode hash; `.some(nil)` clears the passcode.
    func updateGroup(id: UUID, name: String?, passcodeHash: String??, now: Date) async throws -> Conversation?
    func deleteConversation(id: UUID) async throws
    /// Adds members with `role`; existing members are left as they are. Returns the users actually added.
    func addMembers(conversationID: UUID, userIDs: [UUID], role: MemberRole, now: Date) async throws -> [UUID]
    /// Removes a member. If the owner leaves, the longest-standing admin (else member) becomes owner;
    /// a group left empty is deleted.
    func removeMember(conversationID: UUID, userID: UUID, now: Date) async throws
    func setRole(conversationID: UUID, userID: UUID, role: MemberRole) async throws
}

/// Messages and read/delivered watermarks.
public protocol MessageStore: Sendable {
    /// Writes a batch of sends in one transaction, in order, and returns one outcome per request, in
    /// the same order. This is all an adapter implements of the send path (`SendPipeline` owns the
    /// rest). In the transaction, per request: dedupe on (conversation, sender, clientMsgId) — a
    /// replay returns the stored original with `replayed == true` and writes nothing; a sender who is
    /// not a member gets `.failure(conversation_not_found)` and writes nothing; otherwise the next
    /// per-conversation seq (gapless, from 1, also across nodes sharing the database), the message,
    /// the conversation's lastSeq and the sender's own read watermark. Throws only if the whole
    /// transaction failed, and then nothing of the batch was written.
    func appendBatch(_ requests: [SendRequest]) async throws -> [Result<SendResult, any Error>]
    /// Messages in ascending seq order. With `member`, the page is read only if that user is a member
    /// (checked in the same read), else `conversation_not_found` is thrown.
    func messages(conversationID: UUID, member: UUID?, cursor: PageCursor, limit: Int) async throws -> MessagePage
    /// Moves a member's watermark forward (never back), clamped to the conversation's lastSeq.
    /// Moving `read` also moves `delivered` up to it.
    func advanceWatermark(_ kind: Watermark, conversationID: UUID, userID: UUID, to seq: Int64) async throws -> WatermarkUpdate
}

/// Changes to sent messages (edits, deletions, reactions), the change sequence sync reads, and search.
///
/// Each change that commits takes the conversation's next change sequence number, which the
/// message keeps as its `changeSeq` (its latest change), and writes its stream event. None of them
/// moves `lastSeq` or any watermark, so unread counts stay as they were.
public protocol MessageChangeStore: Sendable {

    /// One message of a conversation, in its current state.
    func message(conversationID: UUID, messageID: UUID) async throws -> Message?
    /// Replaces a message's body and re-resolves its mentions; `editedAt` becomes `edit.at`.
    /// Throws `message_not_found`, `not_message_sender` (the editor is not the sender) or
    /// `message_deleted`. Returns nil when the body is unchanged (nothing is written).
    func editMessage(_ edit: MessageEdit) async throws -> MessageChange?
    /// Erases a message's body (and its mentions and reactions) from the store; the message keeps
    /// its seq and reads with an empty body and `deletedAt`. Throws `message_not_found`; returns nil
    /// when it was already deleted.
    func deleteMessage(conversationID: UUID, messageID: UUID, at: Date) async throws -> MessageChange?
    /// Adds (`present`) or removes `userID`'s reaction `emoji`. Throws `message_not_found`,
    /// `message_deleted`, or `too_many_reactions` when the message already has `maxDistinct` other
    /// emoji. Returns nil when nothing changed (already there, or not there to remove).
    func setReaction(
        _ emoji: String, present: Bool, conversationID: UUID, messageID: UUID, userID: UUID, maxDistinct: Int, at: Date
    ) async throws -> MessageChange?
    /// Messages of seq ≤ `maxSeq` whose latest change is after `changeSeq`, in change order, at most
    /// `limit` (for sync: a client holding the messages up to `maxSeq` missed exactly these).
    func changes(conversationID: UUID, after changeSeq: Int64, maxSeq: Int64, limit: Int) async throws -> ChangePage
    /// Full-text search over the messages of the conversations `request.userID` is a member of now,
    /// by relevance then newest first.
    func searchMessages(_ request: SearchRequest) async throws -> SearchPage
}

extension MessageStore {
    /// Messages in ascending seq order, without a membership check.
    public func messages(conversationID: UUID, cursor: PageCursor, limit: Int) async throws -> MessagePage {
        try await messages(conversationID: conversationID, member: nil, cursor: cursor, limit: limit)
    }

    /// Appends one message in a transaction of its own, bypassing the pipeline (no Bus event): for
    /// seeding and tests. Served sends go through `SendPipeline`.
    public func send(_ request: SendRequest) async throws -> SendResult {
        guard let outcome = try await appendBatch([request]).first else {
            throw ParleyError.internal(detail: "appendBatch returned no outcome")
        }
        return try outcome.get()
    }
}
