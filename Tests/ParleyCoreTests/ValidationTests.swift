import Foundation
import ParleyCore
import ParleyTestSupport
import Testing

@Suite("Input rules")
struct ValidationTests {
    @Test("usernames are normalised to lower case and restricted to a safe alphabet")
    func usernames() throws {
        #expect(try Validation.username("Alice_01") == "alice_01")
        for bad in ["ab", String(repeating: "a", count: 33), "al ice", "ålice", "alice!", ""] {
            #expect(throws: ParleyError.self, "\(bad)") { try Validation.username(bad) }
        }
    }

    @Test("emails need one @ and a dotted domain")
    func emails() throws {
        #expect(try Validation.email(" Bob@Example.COM ") == "bob@example.com")
        for bad in ["bob", "bob@", "@example.com", "bob@example", "bob@@example.com", "bo b@example.com", "bob@.com"] {
            #expect(throws: ParleyError.self, "\(bad)") { try Validation.email(bad) }
        }
    }

    @Test("message bodies count UTF-8 bytes and refuse blanks")
    func bodies() throws {
        let limits = Limits()
        try Validation.messageBody(String(repeating: "😀", count: 1000), limits: limits)  // 4000 bytes
        let tooLarge = #expect(throws: ParleyError.self) { try Validation.messageBody(String(repeating: "😀", count: 1001), limits: limits) }
        #expect(tooLarge?.kind == .payloadTooLarge)
        let blank = #expect(throws: ParleyError.self) { try Validation.messageBody(" \n\t", limits: limits) }
        #expect(blank?.code == "empty_body")
    }

    @Test("client message ids are short printable ASCII")
    func clientMsgIDs() throws {
        let limits = Limits()
        #expect(try Validation.clientMsgID(nil, limits: limits) == nil)
        #expect(try Validation.clientMsgID("abc-123_X", limits: limits) == "abc-123_X")
        for bad in ["", "has space", "tab\t", "ünïcode", String(repeating: "k", count: 65)] {
            #expect(throws: ParleyError.self, "\(bad)") { try Validation.clientMsgID(bad, limits: limits) }
        }
    }
}

@Suite("Token-bucket rate limiter")
struct RateLimiterTests {
    @Test("a bucket allows its burst, then refuses with a retry time, then refills")
    func bucket() async {
        let limiter = InMemoryRateLimiter()
        let policy = RateLimitPolicy(name: "t", burst: 3, perSecond: 0.5)
        let start = Date(timeIntervalSince1970: 1_000)
        var decisions: [RateLimitDecision] = []
        for _ in 0..<4 { decisions.append(await limiter.acquire("k", policy: policy, now: start)) }
        #expect(decisions == [.allowed, .allowed, .allowed, .limited(retryAfterSeconds: 2)])
        #expect(await limiter.acquire("other", policy: policy, now: start) == .allowed, "keys are independent")
        #expect(await limiter.acquire("k", policy: policy, now: start + 2) == .allowed, "one token back after 2 s")
        #expect(await limiter.acquire("k", policy: policy, now: start + 2) != .allowed)
    }
}

@Suite("Time-ordered ids")
struct UUIDv7Tests {
    @Test("v7 ids carry the version and variant bits and sort by creation time")
    func ordering() {
        let early = UUID.v7(now: Date(timeIntervalSince1970: 1_700_000_000))
        let late = UUID.v7(now: Date(timeIntervalSince1970: 1_700_000_001))
        #expect(early.uuid.6 >> 4 == 7)
        #expect(early.uuid.8 >> 6 == 0b10)
        #expect(early.lowercased < late.lowercased)
        #expect(Set((0..<1000).map { _ in UUID.v7() }).count == 1000)
    }

    @Test("ids format and parse like Foundation's, faster; anything but the canonical form is refused")
    func textForm() {
        for _ in 0..<1000 {
            let id = UUID()
            #expect(id.lowercased == id.uuidString.lowercased())
            #expect(UUID(canonical: id.lowercased) == id)
            #expect(UUID(canonical: id.uuidString) == id, "upper case is accepted too")
        }
        let good = UUID().lowercased
        for bad in [
            "", String(good.dropLast()), good + "0", good.replacingOccurrences(of: "-", with: ""), "g" + good.dropFirst(),
            String(good.prefix(8)) + "_" + good.dropFirst(9), "{\(good)}",
        ] {
            #expect(UUID(canonical: bad) == nil, "\(bad)")
        }
    }
}

@Suite("The delay after failed logins")
struct LoginDelayTests {
    @Test("free failures cost nothing, then the wait doubles from the first delay up to the cap")
    func schedule() {
        let delay = LoginDelay(freeFailures: 5, firstSeconds: 1, maxSeconds: 900)
        #expect((0...4).map(delay.seconds(after:)) == [0, 0, 0, 0, 0])
        #expect((5...15).map(delay.seconds(after:)) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900])
        #expect(delay.seconds(after: 10_000) == 900, "no overflow however many failures")
        let slow = LoginDelay(freeFailures: 1, firstSeconds: 60, maxSeconds: 600)
        #expect((1...6).map(slow.seconds(after:)) == [60, 120, 240, 480, 600, 600])
    }
}
