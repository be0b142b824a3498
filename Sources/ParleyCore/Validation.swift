import Foundation

/// Pure input checks shared by every entry point.
public enum Validation {
    private static let usernameCharacters = Set("abcdefghijklmnopqrstuvwxyz0123456789_.-")

    /// Usernames are 3–32 characters of a–z, 0–9, `_`, `.`, `-`; compared case-insensitively.
    public static func username(_ raw: String) throws -> String {
        let value = raw.lowercased()
        guard (3...32).contains(value.count), value.allSatisfy({ usernameCharacters.contains($0) }) else {
            throw ParleyError.invalid("Username must be 3–32 characters of a–z, 0–9, '_', '.' or '-'.", code: "invalid_username")
        }
        return value
    }

    public static func email(_ raw: String) throws -> String {
        let value = raw.trimmingCharacters(in: .whitespaces).lowercased()
        let parts = value.split(separator: "@", omittingEmptySubsequences: false)
        guard value.utf8.count <= 254, parts.count == 2, !parts[0].isEmpty, parts[1].contains("."),
            !parts[1].hasPrefix("."), !parts[1].hasSuffix("."),
            !value.contains(where: { $0.isWhitespace || $0.isNewline })
        else {
            throw ParleyError.invalid("Email address is not valid.", code: "invalid_email")
        }
        return value
    }

    public static func password(_ value: String, limits: Limits) throws {
        let bytes = value.utf8.count
        guard bytes >= limits.minPasswordBytes, bytes <= limits.maxPasswordBytes else {
            throw ParleyError.invalid(
                "Password must be \(limits.minPasswordBytes)–\(limits.maxPasswordBytes) bytes long.",
                code: "invalid_password"
            )
        }
    }

    public static func displayName(_ raw: String?, fallback: String) throws -> String {
        guard let raw else { return fallback }
        let value = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard (1...64).contains(value.count), !value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw ParleyError.invalid("Display name must be 1–64 printable characters.", code: "invalid_display_name")
        }
        return value
    }

    public static func groupName(_ raw: String, limits: Limits) throws -> String {
        let value = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard (1...limits.maxGroupNameLength).contains(value.count),
            !value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
        else {
            throw ParleyError.invalid("Group name must be 1–\(limits.maxGroupNameLength) printable characters.", code: "invalid_name")
        }
        return value
    }

    public static func passcode(_ value: String, limits: Limits) throws {
        guard (4...limits.maxPasscodeBytes).contains(value.utf8.count) else {
            throw ParleyError.invalid("Passcode must be 4–\(limits.maxPasscodeBytes) bytes long.", code: "invalid_passcode")
        }
    }

    /// A message body: 1…maxMessageBytes of UTF-8, not only white space (or empty, for a message
    /// that carries attachments).
    public static func messageBody(_ body: String, limits: Limits, attachments: Int = 0) throws {
        let bytes = body.utf8.count
        if bytes > limits.maxMessageBytes {
            throw ParleyError.tooLarge("Message body exceeds \(limits.maxMessageBytes) bytes.", code: "message_too_large")
        }
        if attachments > Attachment.maxPerMessage { throw ParleyError.tooManyAttachments }
        if attachments > 0 && body.allSatisfy(\.isWhitespace) { return }
        guard bytes > 0, body.contains(where: { !$0.isWhitespace }) else {
            throw ParleyError.invalid("Message body must not be empty.", code: "empty_body")
        }
    }

    /// Client message ids: 1…64 printable ASCII characters.
    public static func clientMsgID(_ value: String?, limits: Limits) throws -> String? {
        guard let value else { return nil }
        guard (1...limits.maxClientMsgIDLength).contains(value.utf8.count),
            value.utf8.allSatisfy({ $0 >= 0x21 && $0 <= 0x7E })
        else {
            throw ParleyError.invalid(
                "clientMsgId must be 1–\(limits.maxClientMsgIDLength) printable ASCII characters.",
                code: "invalid_client_msg_id"
            )
        }
        return value
    }

    public static func searchLimit(_ value: Int?, limits: Limits) throws -> Int {
        guard let value else { return min(20, limits.maxSearchResults) }
        guard (1...limits.maxSearchResults).contains(value) else {
            throw ParleyError.invalid("limit must be between 1 and \(limits.maxSearchResults).", code: "invalid_limit")
        }
        return value
    }

    public static func pageLimit(_ value: Int?, limits: Limits) throws -> Int {
        guard let value else { return limits.defaultPageSize }
        guard (1...limits.maxPageSize).contains(value) else {
            throw ParleyError.invalid("limit must be between 1 and \(limits.maxPageSize).", code: "invalid_limit")
        }
        return value
    }
}
