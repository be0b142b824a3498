import Foundation
import Hummingbird
import NIOCore
import ParleyCore

/// Who is calling, once `AuthMiddleware` has checked the access token.
public struct Identity: Sendable {
    public var userID: UUID
    public var sessionID: UUID
    /// True when the token came from the cookie rather than the Authorization header.
    public var viaCookie: Bool
}

public struct ParleyRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The connection's channel; the gateway closes it directly when a socket must go at once.
    public let channel: any Channel
    public var remoteAddress: SocketAddress?
    public var identity: Identity?

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
        self.remoteAddress = source.channel.remoteAddress
    }

    /// The authenticated caller; routes behind `AuthMiddleware` always have one.
    public func requireIdentity() throws -> Identity {
        guard let identity else { throw ParleyError.unauthenticated() }
        return identity
    }
}
