import HummingbirdBcrypt
import NIOPosix
import ParleyCore

/// bcrypt on NIO's blocking thread pool, so hashing never stalls the cooperative pool.
public struct BcryptPasswordHasher: PasswordHasher {
    public let cost: UInt8
    private let threadPool: NIOThreadPool

    public init(cost: Int, threadPool: NIOThreadPool = .singleton) {
        self.cost = UInt8(clamping: cost)
        self.threadPool = threadPool
    }

    public func hash(_ password: String) async throws -> String {
        let cost = self.cost
        return try await threadPool.runIfActive { Bcrypt.hash(password, cost: cost) }
    }

    public func verify(_ password: String, against hash: String) async throws -> Bool {
        guard !hash.isEmpty else { return false }
        return try await threadPool.runIfActive { Bcrypt.verify(password, hash: hash) }
    }
}
