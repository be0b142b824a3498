import Foundation

/// Conversations and messages, with authorization: every operation checks the caller's
/// membership and role. A caller who is not a member sees `conversation_not_found`, never data.
///
/// Every change that other users should see is published on the `Bus` after it is stored:
/// messages (by the `SendPipeline`, in seq order), receipts, typing and conversation changes.
public struct ChatService: Sendable {
    private let store: any ChatStore
    private let hasher: any PasswordHasher
    private let limits: Limits
    private let bus: any Bus
    private let typing: TypingTracker
    /// Where sends go; see `SendPipeline`.
    public let pipeline: SendPipeline

    public init(
        store: any ChatStore, hasher: any PasswordHasher, limits: Limits, bus: any Bus, typing: TypingTracker, pipeline: SendPipeline
    ) {
        self.store = store
        self.hasher = hasher
        self.limits = limits
        self.bus = bus
        self.typing = typing
        self.pipeline = pipeline
    }

    // MARK: Conversations

    public func createDirect(caller: UUID, with other: UUID, now: Date = .now) async throws -> (Conversation, created: Bool) {
        guard other != caller else {
            throw ParleyError.invalid("A direct conversation needs another user.", code: "invalid_user_id")
        }
        guard try await store.user(id: other) != nil else { throw ParleyError.userNotFound }
        let (conversation, created) = try await store.findOrCreateDirectConversation(between: caller, and: other, now: now)
        if created { publish(.created, conversation, to: conversation.members.map(\.userID)) }
        return (conversation, created)
    }

    public func createGroup(caller: UUID, name: String, memberIDs: [UUID], passcode: String?, now: Date = .now) async throws -> Conversation {
        let name = try Validation.groupName(name, limits: limits)
        let others = try await existingUsers(memberIDs.filter { $0 != caller })
        guard others.count + 1 <= limits.maxGroupMembers else {
            throw ParleyError.invalid("A group holds at most \(limits.maxGroupMembers) members.", code: "group_full")
        }
        let passcodeHash = try await hashPasscode(passcode)
        let group = try await store.createGroup(
            id: .v7(now: now), name: name, ownerID: caller, memberIDs: others, passcodeHash: passcodeHash, now: now)
        publish(.created, group, to: group.members.map(\.userID))
        return group
    }

    public func conversation(caller: UUID, id: UUID) async throws -> Conversation {
        guard let conversation = try await store.conversation(id: id), conversation.member(caller) != nil else {
            throw ParleyError.conversationNotFound
        }
        return conversation
    }

    public func conversations(caller: UUID) async throws -> [Conversation] {
        try await store.conversations(for: caller, limit: limits.maxConversationsListed)
    }

    /// Renames a group and/or sets (`.some(string)`) or clears (`.some(nil)`) its passcode. Admins and the owner.
    public func updateGroup(caller: UUID, id: UUID, name: String?, passcode: String??, now: Date = .now) async throws -> Conversation {
        let conversation = try await self.conversation(caller: caller, id: id)
        try requireGroup(conversation)
        try require(conversation, caller, atLeast: .admin, action: "change this group")
        let name = try name.map { try Validation.groupName($0, limits: limits) }
        var passcodeHash: String?? = nil
        if let passcode {
            passcodeHash = .some(try await hashPasscode(passcode))
        }
        guard let updated = try await store.updateGroup(id: id, name: name, passcodeHash: passcodeHash, now: now) else {
            throw ParleyError.conversationNotFound
        }
        publish(.updated, updated, to: updated.members.map(\.userID))
        return updated
    }

    /// Deletes a group and all its messages. The owner only.
    public func deleteConversation(caller: UUID, id: UUID) async throws {
        let conversation = try await self.conversation(caller: caller, id: id)
        try requireGroup(conversation)
        try require(conversation, caller, atLeast: .owner, action: "delete this group")
        try await store.deleteConversation(id: id)
        publish(.deleted, conversation, to: conversation.members.map(\.userID))
    }

    public func addMembers(caller: UUID, id: UUID, userIDs: [UUID], now: Date = .now) async throws -> Conversation {
        let conversation = try await self.conversation(caller: caller, id: id)
        try requireGroup(conversation)
        try require(conversation, caller, atLeast: .admin, action: "add members")
        guard !userIDs.isEmpty else { throw ParleyError.invalid("userIds must not be empty.", code: "invalid_user_ids") }
        let newIDs = try await existingUsers(userIDs).filter { conversation.member($0) == nil }
        guard conversation.members.count + newIDs.count <= limits.maxGroupMembers else {
            throw ParleyError.invalid("A group holds at most \(limits.maxGroupMembers) members.", code: "group_full")
        }
        let added = try await store.addMembers(conversationID: id, userIDs: newIDs, role: .member, now: now)
        let updated = try await self.conversation(caller: caller, id: id)
        announceJoin(of: added, to: updated)
        return updated
    }

    /// Removes `userID`: the caller leaving, or an admin removing someone of lower rank.
    public func removeMember(caller: UUID, id: UUID, userID: UUID, now: Date = .now) async throws {
        let conversation = try await self.conversation(caller: caller, id: id)
        try requireGroup(conversation)
        guard let target = conversation.member(userID) else {
            throw ParleyError.notFound("That user is not a member of this conversation.", code: "member_not_found")
        }
        if userID != caller {
            let role = conversation.member(caller)?.role ?? .member
            guard role >= .admin, target.role < role else {
                throw ParleyError.forbidden("Your role does not allow removing this member.", code: "insufficient_role")
            }
        }
        try await store.removeMember(conversationID: id, userID: userID, now: now)
        if let remaining = try await store.conversation(id: id) {
            publish(.removed, remaining, to: [userID])
            publish(.updated, remaining, to: remaining.members.map(\.userID))
        } else {
            var gone = conversation
            gone.members.removeAll { $0.userID == userID }
            publish(.removed, gone, to: [userID])
        }
    }

    /// Promotes or demotes a member. The owner only; ownership itself is not transferable this way.
    public func setRole(caller: UUID, id: UUID, userID: UUID, role: MemberRole) async throws -> Conversation {
        let conversation = try await self.conversation(caller: caller, id: id)
        try requireGroup(conversation)
        try require(conversation, caller, atLeast: .owner, action: "change roles")
        guard role != .owner else { throw ParleyError.invalid("role must be \"admin\" or \"member\".", code: "invalid_role") }
        guard let target = conversation.member(userID) else {
            throw ParleyError.notFound("That user is not a member of this conversation.", code: "member_not_found")
        }
        guard target.role != .owner else { throw ParleyError.forbidden("The owner's role cannot be changed.", code: "insufficient_role") }
        try await store.setRole(conversationID: id, userID: userID, role: role)
        let updated = try await self.conversation(caller: caller, id: id)
        publish(.updated, updated, to: updated.members.map(\.userID))
        return updated
    }

    /// Joins a passcode-protected group. Members get the conversation back unchanged.
    public func join(caller: UUID, id: UUID, passcode: String, now: Date = .now) async throws -> Conversation {
        guard let conversation = try await store.conversation(id: id), conversation.type == .group else {
            throw ParleyError.conversationNotFound
        }
        if conversation.member(caller) != nil { return conversation }
        guard let hash = try await store.passcodeHash(conversationID: id) else {
            throw ParleyError.forbidden("This group can only be joined by invitation.", code: "join_not_allowed")
        }
        guard passcode.utf8.count <= limits.maxPasscodeBytes, try await hasher.verify(passcode, against: hash) else {
            throw ParleyError.forbidden("The passcode is incorrect.", code: "wrong_passcode")
        }
        guard conversation.members.count < limits.maxGroupMembers else {
            throw ParleyError.invalid("A group holds at most \(limits.maxGroupMembers) members.", code: "group_full")
        }
        let added = try await store.addMembers(conversationID: id, userIDs: [caller], role: .member, now: now)
        let updated = try await self.conversation(caller: caller, id: id)
        announceJoin(of: added, to: updated)
        return updated
    }

    // MARK: Messages

    /// Validates and queues a send; `whenResolved` runs once it is committed (or refused), before the
    /// message is published. See `SendPipeline.submit`.
    public func enqueueSend(
        caller: UUID, conversationID: UUID, body: String, clientMsgID: String?, replyToID: UUID? = nil, attachmentIDs: [UUID] = [],
        now: Date = .now, whenResolved: @escaping Promise<SendResult>.Callback
    ) {
        do {
            _ = try pipeline.submit(
                caller: caller, conversationID: conversationID, body: body, clientMsgID: clientMsgID, replyToID: replyToID,
                attachmentIDs: attachmentIDs, now: now, whenResolved: whenResolved)
        } catch {
            whenResolved(.failure(error))
        }
    }

    public func send(
        caller: UUID, conversationID: UUID, body: String, clientMsgID: String?, replyToID: UUID? = nil, attachmentIDs: [UUID] = [],
        now: Date = .now
    ) async throws -> SendResult {
        try await pipeline.send(
            caller: caller, conversationID: conversationID, body: body, clientMsgID: clientMsgID, replyToID: replyToID,
            attachmentIDs: attachmentIDs, now: now)
    }

    // MARK: Changes to sent messages

    /// Replaces the body of one of the caller's own messages. Members hear `updated` (`edited`).
    public func editMessage(caller: UUID, conversationID: UUID, messageID: UUID, body: String, now: Date = .now) async throws -> Message {
        try await requireMember(caller, conversationID)
        try Validation.messageBody(body, limits: limits)
        let edit = MessageEdit(conversationID: conversationID, messageID: messageID, editorID: caller, body: body, at: now)
        guard let change = try await store.editMessage(edit) else {
            // The same body again: nothing changed.
            guard let message = try await store.message(conversationID: conversationID, messageID: messageID) else {
                throw ParleyError.messageNotFound
            }
            return message
        }
        publish(change)
        return change.message
    }

    /// Deletes a message: its sender may, and in a group an admin or the owner may delete anyone's.
    /// Deleting a deleted message succeeds and changes nothing.
    public func deleteMessage(caller: UUID, conversationID: UUID, messageID: UUID, now: Date = .now) async throws {
        let conversation = try await self.conversation(caller: caller, id: conversationID)
        guard let message = try await store.message(conversationID: conversationID, messageID: messageID) else {
            throw ParleyError.messageNotFound
        }
        if message.senderID != caller {
            let role = conversation.member(caller)?.role ?? .member
            guard conversation.type == .group, role >= .admin else {
                throw ParleyError.forbidden(
                    "Only the sender, or a group's admin or owner, can delete this message.", code: "not_message_sender")
            }
        }
        if let change = try await store.deleteMessage(conversationID: conversationID, messageID: messageID, at: now) {
            publish(change)
        }
    }

    /// Adds (`present`) or removes the caller's reaction. Idempotent.
    public func setReaction(caller: UUID, conversationID: UUID, messageID: UUID, emoji: String, present: Bool, now: Date = .now) async throws {
        try await requireMember(caller, conversationID)
        let emoji = try Emoji.reaction(emoji)
        if let change = try await store.setReaction(
            emoji, present: present, conversationID: conversationID, messageID: messageID, userID: caller,
            maxDistinct: limits.maxReactionsPerMessage, at: now)
        {
            publish(change)
        }
    }

    /// Messages of the caller's conversations matching `query`.
    public func search(caller: UUID, query: String, conversationID: UUID?, before: UUID?, limit: Int?) async throws -> SearchPage {
        let parsed = try SearchQuery(parsing: query)
        let limit = try Validation.searchLimit(limit, limits: limits)
        if let conversationID { try await requireMember(caller, conversationID) }
        return try await store.searchMessages(
            SearchRequest(query: parsed, userID: caller, conversationID: conversationID, before: before, limit: limit))
    }

    /// Changes a client missed: messages up to `maxSeq` (the messages it holds) whose latest change
    /// is after `changeSeq`, in change order.
    public func changes(caller: UUID, conversationID: UUID, after changeSeq: Int64, maxSeq: Int64, limit: Int) async throws -> ChangePage {
        guard changeSeq >= 0 else { throw ParleyError.invalid("Change cursors must be ≥ 0.", code: "invalid_cursor") }
        try await requireMember(caller, conversationID)
        return try await store.changes(conversationID: conversationID, after: changeSeq, maxSeq: maxSeq, limit: min(limit, limits.maxPageSize))
    }

    private func publish(_ change: MessageChange) {
        bus.publish(.updated(change.kind, change.message, changeSeq: change.changeSeq), to: change.recipients)
    }

    public func messages(caller: UUID, conversationID: UUID, cursor: PageCursor, limit: Int?) async throws -> MessagePage {
        let limit = try Validation.pageLimit(limit, limits: limits)
        switch cursor {
        case .before(let seq) where seq < 1, .after(let seq) where seq < 0:
            throw ParleyError.invalid("before must be ≥ 1 and after ≥ 0.", code: "invalid_cursor")
        default: break
        }
        // The membership check and the page are one read of the store.
        return try await store.messages(conversationID: conversationID, member: caller, cursor: cursor, limit: limit)
    }

    /// Moves the caller's read (or delivered) watermark forward. When it moves, every member
    /// (including the caller's other devices) gets a receipt.
    @discardableResult
    public func advance(_ kind: Watermark, caller: UUID, conversationID: UUID, seq: Int64) async throws -> WatermarkUpdate {
        guard seq >= 0 else { throw ParleyError.invalid("seq must be ≥ 0.", code: "invalid_seq") }
        let update = try await store.advanceWatermark(kind, conversationID: conversationID, userID: caller, to: seq)
        if update.advanced {
            let members = try await store.memberIDs(conversationID: conversationID)
            bus.publish(.receipt(conversationID: conversationID, userID: caller, kind: kind, seq: update.value), to: members)
        }
        return update
    }

    /// Relays a typing indicator to the other members, throttled by the `TypingTracker`.
    public func setTyping(caller: UUID, conversationID: UUID, state: TypingState, now: Date = .now) async throws {
        let members = try await store.memberIDs(conversationID: conversationID)
        guard members.contains(caller) else { throw ParleyError.conversationNotFound }
        let relay =
            switch state {
            case .start: typing.start(conversationID: conversationID, userID: caller, now: now)
            case .stop: typing.stop(conversationID: conversationID, userID: caller)
            }
        if relay {
            bus.publish(.typing(conversationID: conversationID, userID: caller, state: state), to: members.filter { $0 != caller })
        }
    }

    /// Publishes `stop` for typing indicators whose owner went quiet. Call periodically. Every
    /// expired indicator is tried; if the members of some could not be read, the last such error is thrown.
    public func expireTyping(now: Date = .now) async throws {
        var failure: (any Error)?
        for (conversationID, userID) in typing.expire(now: now) {
            do {
                let members = try await store.memberIDs(conversationID: conversationID)
                bus.publish(.typing(conversationID: conversationID, userID: userID, state: .stop), to: members.filter { $0 != userID })
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
    }

    /// Messages after each cursor, for a client catching up. Conversations the caller is not a
    /// member of are refused as a whole with `conversation_not_found`.
    public func sync(caller: UUID, conversationID: UUID, after seq: Int64, limit: Int) async throws -> MessagePage {
        guard seq >= 0 else { throw ParleyError.invalid("Cursors must be ≥ 0.", code: "invalid_cursor") }
        try await requireMember(caller, conversationID)
        return try await store.messages(conversationID: conversationID, cursor: .after(seq), limit: min(limit, limits.maxPageSize))
    }

    // MARK: Helpers

    private func publish(_ change: ConversationChange, _ conversation: Conversation, to recipients: [UUID]) {
        guard !recipients.isEmpty else { return }
        bus.publish(.conversation(change, conversation), to: recipients)
    }

    /// New members hear `created`, the others `updated`.
    private func announceJoin(of added: [UUID], to conversation: Conversation) {
        guard !added.isEmpty else { return }
        let newcomers = Set(added)
        publish(.created, conversation, to: added)
        publish(.updated, conversation, to: conversation.members.map(\.userID).filter { !newcomers.contains($0) })
    }

    private func requireMember(_ caller: UUID, _ conversationID: UUID) async throws {
        guard try await store.member(conversationID: conversationID, userID: caller) != nil else {
            throw ParleyError.conversationNotFound
        }
    }

    private func requireGroup(_ conversation: Conversation) throws {
        guard conversation.type == .group else {
            throw ParleyError.invalid("Only group conversations support this operation.", code: "not_a_group")
        }
    }

    private func require(_ conversation: Conversation, _ caller: UUID, atLeast role: MemberRole, action: String) throws {
        guard let member = conversation.member(caller), member.role >= role else {
            throw ParleyError.forbidden("Only a group \(role.rawValue) can \(action).", code: "insufficient_role")
        }
    }

    /// De-duplicated ids, all of which must name existing users.
    private func existingUsers(_ ids: [UUID]) async throws -> [UUID] {
        var seen = Set<UUID>()
        let unique = ids.filter { seen.insert($0).inserted }
        guard unique.count <= limits.maxMemberIDsPerRequest else {
            throw ParleyError.invalid("At most \(limits.maxMemberIDsPerRequest) user ids per request.", code: "too_many_user_ids")
        }
        guard !unique.isEmpty else { return [] }
        let found = Set(try await store.users(ids: unique).map(\.id))
        guard found.count == unique.count else { throw ParleyError.userNotFound }
        return unique
    }

    private func hashPasscode(_ passcode: String?) async throws -> String? {
        guard let passcode else { return nil }
        try Validation.passcode(passcode, limits: limits)
        return try await hasher.hash(passcode)
    }
}
