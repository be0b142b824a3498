import Foundation
import ParleyCore
import Testing

@Suite("Encryption at rest: the key ring")
struct EncryptionTests {
    static let keyA = Data((0..<32).map { UInt8($0) }).base64EncodedString()
    static let keyB = Data((0..<32).map { UInt8(255 - $0) }).base64EncodedString()

    @Test("the first key seals, every key opens, and a value opens only where it was sealed")
    func roundTrip() throws {
        let old = try KeyRing(parsing: "2026a:\(Self.keyA)")
        let conversation = UUID()
        let here = SealContext.messageBody(conversationID: conversation, seq: 7)
        let sealed = old.seal(text: "the canary 🐤 sings", context: here)
        #expect(!String(decoding: sealed, as: UTF8.self).contains("canary"))
        #expect(old.seal(text: "the canary 🐤 sings", context: here) != sealed, "a fresh nonce every time")
        #expect(try old.openText(sealed, keyID: "2026a", context: here) == "the canary 🐤 sings")

        // After rotation the new key seals and the old one still opens what it sealed.
        let rotated = try KeyRing(parsing: "2026b:\(Self.keyB), 2026a:\(Self.keyA)")
        #expect(rotated.active.id == "2026b")
        #expect(rotated.ids == ["2026b", "2026a"])
        #expect(try rotated.openText(sealed, keyID: "2026a", context: here) == "the canary 🐤 sings")
        let resealed = rotated.seal(text: "again", context: here)
        #expect(throws: KeyRing.Failure.unknownKey("2026b")) { try old.open(resealed, keyID: "2026b", context: here) }

        // Moved to another message, another seq or another kind of field: it does not open.
        for elsewhere in [
            SealContext.messageBody(conversationID: conversation, seq: 8), .messageBody(conversationID: UUID(), seq: 7),
            .attachmentName(id: conversation),
        ] {
            #expect(throws: KeyRing.Failure.tampered) { try old.open(sealed, keyID: "2026a", context: elsewhere) }
        }
        // Under another key of the same id: it does not open.
        let impostor = try KeyRing(parsing: "2026a:\(Self.keyB)")
        #expect(throws: KeyRing.Failure.tampered) { try impostor.open(sealed, keyID: "2026a", context: here) }
    }

    @Test("a flipped bit anywhere, or a cut value, is refused, never returned")
    func tampering() throws {
        let ring = try KeyRing(parsing: "k:\(Self.keyA)")
        let context = SealContext.attachmentName(id: UUID())
        let sealed = ring.seal(text: "report.pdf", context: context)
        for index in sealed.indices {
            var altered = sealed
            altered[index] ^= 0x01
            #expect(throws: KeyRing.Failure.tampered, "byte \(index)") { try ring.open(altered, keyID: "k", context: context) }
        }
        #expect(throws: KeyRing.Failure.truncated) { try ring.open(sealed.prefix(27), keyID: "k", context: context) }
        #expect(throws: KeyRing.Failure.tampered) { try ring.open(sealed.dropLast(), keyID: "k", context: context) }
    }

    @Test(
        "a malformed key setting is refused with a reason that never shows a key",
        arguments: [
            ("", "entry 1"), ("k1", "entry 1"), ("k1:\(keyA),", "entry 2"), (":\(keyA)", "entry 1"), ("bad id:\(keyA)", "entry 1"),
            ("k1:\(keyA),k1:\(keyB)", "twice"), ("k1:c2hvcnQ=", "32 bytes"), ("k1:not base64!", "32 bytes"),
            ("\(String(repeating: "x", count: 33)):\(keyA)", "entry 1"),
        ])
    func malformed(setting: String, reason: String) {
        do {
            _ = try KeyRing(parsing: setting)
            Issue.record("accepted \(setting)")
        } catch {
            #expect(error.description.contains(reason), "\(error.description)")
            #expect(!error.description.contains(Self.keyA) && !error.description.contains(Self.keyB))
        }
    }
}
