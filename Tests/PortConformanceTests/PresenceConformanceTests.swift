import Foundation
import ParleyCore
import ParleyTestSupport
import Testing

@Suite("PresenceRegistry conformance")
struct PresenceConformanceTests {
    @Test("online while any connection on any node is open; offline after the last closes", arguments: PresenceFactory.all)
    func acrossNodes(factory: PresenceFactory) async throws {
        let (nodeA, nodeB, teardown) = try await factory.make()
        defer { teardown() }
        let alice = UUID()
        let bob = UUID()
        let phone = UUID()
        let laptop = UUID()
        let now = Date()
        #expect(try await nodeA.connect(userID: alice, connectionID: phone, now: now), "first connection: came online")
        #expect(!(try await nodeB.connect(userID: alice, connectionID: laptop, now: now)), "second connection, other node: already online")
        #expect(try await nodeA.online([alice, bob], now: now) == [alice])
        #expect(try await nodeB.online([alice, bob], now: now) == [alice])
        #expect(!(try await nodeA.disconnect(userID: alice, connectionID: phone, now: now)), "the laptop is still connected")
        #expect(!(try await nodeA.disconnect(userID: alice, connectionID: phone, now: now)), "closing twice is harmless")
        #expect(try await nodeB.online([alice], now: now) == [alice])
        #expect(try await nodeB.disconnect(userID: alice, connectionID: laptop, now: now), "last connection: went offline")
        #expect(try await nodeA.online([alice], now: now).isEmpty)
    }

    @Test("a node that stops heartbeating loses its users after the TTL; heartbeats keep them", arguments: PresenceFactory.all)
    func expiry(factory: PresenceFactory) async throws {
        let (nodeA, nodeB, teardown) = try await factory.make()
        defer { teardown() }
        let crashed = UUID()
        let alive = UUID()
        let start = Date()
        let ttl = PortFactories.presenceTTL
        _ = try await nodeA.connect(userID: crashed, connectionID: UUID(), now: start)
        let aliveConnection = UUID()
        _ = try await nodeB.connect(userID: alive, connectionID: aliveConnection, now: start)
        // Node B keeps heartbeating; node A has "crashed" and says nothing more.
        try await nodeB.heartbeat([PresenceConnection(userID: alive, connectionID: aliveConnection)], now: start.addingTimeInterval(ttl * 0.6))
        let later = start.addingTimeInterval(ttl * 1.2)
        #expect(try await nodeB.online([crashed, alive], now: later) == [alive])
        // The lapsed user coming back counts as coming online again.
        #expect(try await nodeB.connect(userID: crashed, connectionID: UUID(), now: later))
    }

    @Test("lapsed connections are swept once: exactly one node reports each user offline", arguments: PresenceFactory.all)
    func sweepOnce(factory: PresenceFactory) async throws {
        let (nodeA, nodeB, teardown) = try await factory.make()
        defer { teardown() }
        let start = Date()
        let ttl = PortFactories.presenceTTL
        let crashed = [UUID(), UUID(), UUID()]
        for user in crashed { _ = try await nodeA.connect(userID: user, connectionID: UUID(), now: start) }
        // One user also has a live socket on the surviving node: not offline.
        let alsoElsewhere = crashed[0]
        let survivor = UUID()
        _ = try await nodeB.connect(userID: alsoElsewhere, connectionID: survivor, now: start.addingTimeInterval(ttl * 0.5))
        #expect(try await nodeB.sweep(now: start.addingTimeInterval(ttl * 0.5)).isEmpty, "nothing has lapsed yet")

        let later = start.addingTimeInterval(ttl * 1.2)
        async let a = nodeA.sweep(now: later)
        async let b = nodeB.sweep(now: later)
        let reported = try await a + b
        #expect(reported.sorted { $0.uuidString < $1.uuidString } == [crashed[1], crashed[2]].sorted { $0.uuidString < $1.uuidString })
        #expect(try await nodeA.sweep(now: later).isEmpty, "a second sweep finds nothing")
        #expect(try await nodeA.online(crashed, now: later) == [alsoElsewhere])
    }

    @Test("a heartbeat restores a connection the registry lost (e.g. a Redis restart)", arguments: PresenceFactory.all)
    func heartbeatRestores(factory: PresenceFactory) async throws {
        let (nodeA, nodeB, teardown) = try await factory.make()
        defer { teardown() }
        let alice = UUID()
        let connection = UUID()
        let now = Date()
        try await nodeA.heartbeat([PresenceConnection(userID: alice, connectionID: connection)], now: now)
        #expect(try await nodeB.online([alice], now: now) == [alice])
        #expect(try await nodeB.disconnect(userID: alice, connectionID: connection, now: now))
    }

    @Test("concurrent first connections on two nodes report exactly one transition", arguments: PresenceFactory.all)
    func concurrentConnects(factory: PresenceFactory) async throws {
        let (nodeA, nodeB, teardown) = try await factory.make()
        defer { teardown() }
        for _ in 0..<20 {
            let user = UUID()
            let now = Date()
            async let a = nodeA.connect(userID: user, connectionID: UUID(), now: now)
            async let b = nodeB.connect(userID: user, connectionID: UUID(), now: now)
            let results = try await [a, b]
            #expect(results.filter { $0 }.count == 1)
        }
    }
}
