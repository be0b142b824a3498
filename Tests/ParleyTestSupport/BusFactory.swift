import Foundation
import ParleyCore
import Testing

/// One adapter of the `Bus` port for the conformance suite: two nodes on the same bus (for the
/// in-process bus, both are the same instance, since it is the whole cluster).
public struct BusFactory: Sendable, CustomTestStringConvertible {
    public let name: String
    public let make: @Sendable () async throws -> BusPair

    public var testDescription: String { name }

    public static let inProcess = BusFactory(name: "in-process") {
        let bus = InProcessBus()
        return BusPair(publisher: bus, subscriber: bus) {}
    }

    public static let all: [BusFactory] = [.inProcess]
}

public struct BusPair: Sendable {
    /// The node that publishes.
    public let publisher: any Bus
    /// The node whose handler the test watches.
    public let subscriber: any Bus
    public let teardown: @Sendable () async -> Void

    public init(publisher: any Bus, subscriber: any Bus, teardown: @escaping @Sendable () async -> Void) {
        self.publisher = publisher
        self.subscriber = subscriber
        self.teardown = teardown
    }
}
