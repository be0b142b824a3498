import Foundation

/// A request body type that names the fields it accepts, so unknown fields can be refused.
public protocol StrictDecodable: Decodable {
    static var fields: Set<String> { get }
}

/// Strict decoding of JSON request bodies: a body that is empty, not UTF-8, not JSON, not an object,
/// carries unknown fields, or has a field of the wrong type is refused with a `ParleyError` whose
/// code says which (`malformed_json`, `invalid_utf8`, `unknown_field`, `invalid_field`).
public enum StrictJSON {
    private static let decoder = JSONDecoder()

    /// Decodes a JSON object body into `T`.
    public static func decode<T: StrictDecodable>(_ type: T.Type, from data: Data) throws -> T {
        guard !data.isEmpty else {
            throw ParleyError.invalid("A JSON object body is required.", code: "malformed_json")
        }
        guard String(validating: data, as: UTF8.self) != nil else {
            throw ParleyError.invalid("Request body is not valid UTF-8.", code: "invalid_utf8")
        }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data, options: [])
        } catch {
            throw ParleyError.invalid("Request body is not valid JSON.", code: "malformed_json")
        }
        guard let dictionary = object as? [String: Any] else {
            throw ParleyError.invalid("Request body must be a JSON object.", code: "malformed_json")
        }
        let unknown = Set(dictionary.keys).subtracting(T.fields).sorted()
        if !unknown.isEmpty {
            throw ParleyError.invalid("Unknown field(s): \(unknown.joined(separator: ", ")).", code: "unknown_field")
        }
        do {
            return try decoder.decode(T.self, from: data)
        } catch let error as DecodingError {
            throw ParleyError.invalid(describe(error), code: "invalid_field")
        }
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context, _ key: (any CodingKey)? = nil) -> String {
            let keys = context.codingPath + (key.map { [$0] } ?? [])
            let text = keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
            return text.isEmpty ? "body" : text
        }
        switch error {
        case .keyNotFound(let key, let context):
            return "Missing required field \(path(context, key))."
        case .typeMismatch(let type, let context):
            return "Field \(path(context)) must be of type \(jsonTypeName(type))."
        case .valueNotFound(let type, let context):
            return "Field \(path(context)) must be a \(jsonTypeName(type)), not null."
        case .dataCorrupted(let context):
            return "Field \(path(context)) is invalid: \(context.debugDescription)"
        @unknown default:
            return "Request body does not match the expected shape."
        }
    }

    private static func jsonTypeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type, is UUID.Type: "string"
        case is Int.Type, is Int64.Type, is Double.Type: "number"
        case is Bool.Type: "boolean"
        case is [Any].Type: "array"
        default: "\(type)"
        }
    }
}
