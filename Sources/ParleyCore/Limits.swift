/// Input limits enforced by the domain, the same for every transport.
public struct Limits: Sendable, Equatable {
    /// Largest message body in UTF-8 bytes.
    public var maxMessageBytes: Int = 4000
    public var maxClientMsgIDLength: Int = 64
    public var maxGroupNameLength: Int = 100
    public var maxGroupMembers: Int = 1000
    /// Largest number of user ids in one create/add request.
    public var maxMemberIDsPerRequest: Int = 200
    public var maxPageSize: Int = 200
    public var defaultPageSize: Int = 50
    public var maxSearchResults: Int = 50
    /// Most distinct emoji reactions on one message (`PARLEY_MAX_REACTIONS_PER_MESSAGE`).
    public var maxReactionsPerMessage: Int = 20
    public var maxConversationsListed: Int = 500
    public var minPasswordBytes: Int = 8
    /// bcrypt only reads the first 72 bytes; longer passwords are refused rather than silently truncated.
    public var maxPasswordBytes: Int = 72
    public var maxPasscodeBytes: Int = 72

    public init() {}
}
