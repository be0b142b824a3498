import Crypto
import Foundation

/// The keys that encrypt message text at rest (`PARLEY_ENCRYPTION_KEYS=keyId:base64key[,…]`):
/// AES-256-GCM, the first key seals, every key opens. A sealed value carries the id of its key and
/// a random nonce, and is bound to where it belongs (associated data such as the conversation id
/// and seq): copied anywhere else, it no longer opens.
public struct KeyRing: Sendable {
    public struct Key: Sendable {
        public let id: String
        let key: SymmetricKey
    }

    /// The key new values are sealed with.
    public let active: Key
    private let keys: [String: SymmetricKey]

    /// The ids this ring can open, the active one first.
    public let ids: [String]

    public enum Failure: Error, Equatable, CustomStringConvertible {
        case malformed(String)
        /// A stored value names a key the ring does not have.
        case unknownKey(String)
        /// The value was altered, moved, or sealed with another key of the same id.
        case tampered
        case truncated

        public var description: String {
            switch self {
            case .malformed(let reason): "PARLEY_ENCRYPTION_KEYS: \(reason)"
            case .unknownKey(let id): "no key \"\(id)\" in PARLEY_ENCRYPTION_KEYS"
            case .tampered: "a sealed value does not open: altered, moved to another row, or sealed with a different key of the same id"
            case .truncated: "a sealed value is truncated"
            }
        }
    }

    /// Parses `keyId:base64key[,keyId:base64key…]`: ids of 1–32 letters, digits, `-` or `_`, each key
    /// 32 bytes (base64 of `openssl rand -base64 32`). The message of a failure never shows a key.
    public init(parsing text: String) throws(Failure) {
        var ids: [String] = []
        var keys: [String: SymmetricKey] = [:]
        for (index, entry) in text.split(separator: ",", omittingEmptySubsequences: false).enumerated() {
            let parts = entry.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { throw .malformed("entry \(index + 1) is not keyId:base64key") }
            let id = String(parts[0])
            guard (1...32).contains(id.utf8.count), id.utf8.allSatisfy({ Self.isIDByte($0) }) else {
                throw .malformed("entry \(index + 1): a key id is 1–32 letters, digits, - or _")
            }
            guard keys[id] == nil else { throw .malformed("key id \"\(id)\" appears twice") }
            guard let bytes = Data(base64Encoded: String(parts[1])), bytes.count == 32 else {
                throw .malformed("key \"\(id)\" is not 32 bytes of base64 (openssl rand -base64 32)")
            }
            ids.append(id)
            keys[id] = SymmetricKey(data: bytes)
        }
        guard let first = ids.first, let key = keys[first] else { throw .malformed("no keys") }
        self.ids = ids
        self.keys = keys
        self.active = Key(id: first, key: key)
    }

    private static func isIDByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "-"), UInt8(ascii: "_"):
            true
        default: false
        }
    }

    /// Whether the ring holds a key of this id.
    public func has(_ id: String) -> Bool { keys[id] != nil }

    /// Seals `plaintext` with the active key: `nonce (12) ‖ ciphertext ‖ tag (16)`, bound to
    /// `context`. Store the result with `active.id`.
    public func seal(_ plaintext: some DataProtocol, context: SealContext) -> [UInt8] {
        // Sealing with a valid 256-bit key and a fresh random nonce cannot fail.
        let box = try! AES.GCM.seal(plaintext, using: active.key, nonce: AES.GCM.Nonce(), authenticating: context.bytes)
        return Array(box.nonce) + Array(box.ciphertext) + Array(box.tag)
    }

    /// Opens a value sealed with key `keyID` for `context`.
    public func open(_ sealed: some Collection<UInt8>, keyID: String, context: SealContext) throws(Failure) -> [UInt8] {
        guard let key = keys[keyID] else { throw .unknownKey(keyID) }
        guard sealed.count >= 12 + 16 else { throw .truncated }
        let bytes = Array(sealed)
        do {
            let box = try AES.GCM.SealedBox(
                nonce: AES.GCM.Nonce(data: bytes[0..<12]), ciphertext: bytes[12..<(bytes.count - 16)], tag: bytes[(bytes.count - 16)...])
            return Array(try AES.GCM.open(box, using: key, authenticating: context.bytes))
        } catch {
            throw .tampered
        }
    }

    /// `seal` for text.
    public func seal(text: String, context: SealContext) -> [UInt8] {
        seal(Array(text.utf8), context: context)
    }

    /// `open` for text sealed by `seal(text:context:)`.
    public func openText(_ sealed: some Collection<UInt8>, keyID: String, context: SealContext) throws(Failure) -> String {
        let bytes = try open(sealed, keyID: keyID, context: context)
        guard let text = String(validating: bytes, as: UTF8.self) else { throw .tampered }
        return text
    }
}

/// Where a sealed value belongs, authenticated with it (AES-GCM associated data): what it is, and
/// the row it lives in. A value copied to another message, or from a body into a preview, fails
/// to open.
public struct SealContext: Sendable, Equatable {
    let bytes: [UInt8]

    /// A message's body.
    public static func messageBody(conversationID: UUID, seq: Int64) -> SealContext {
        SealContext("parley/v1/message-body/\(conversationID.lowercased)/\(seq)")
    }

    /// An attachment's file name.
    public static func attachmentName(id: UUID) -> SealContext {
        SealContext("parley/v1/attachment-name/\(id.lowercased)")
    }

    /// An outbox event (its envelope holds message text).
    public static func outboxEvent(id: UUID) -> SealContext {
        SealContext("parley/v1/outbox-event/\(id.lowercased)")
    }

    private init(_ text: String) {
        bytes = Array(text.utf8)
    }
}
