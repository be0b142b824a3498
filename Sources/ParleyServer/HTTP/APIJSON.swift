import Foundation
import Hummingbird
import NIOCore
import ParleyCore

/// A request body type that names the fields it accepts, so unknown fields can be refused.
protocol StrictDecodable: Decodable {
    static var fields: Set<String> { get }
}

/// JSON in and out of the API: RFC 3339 UTC times with milliseconds, strict request decoding.
enum APIJSON {
    static let dateStyle = WireJSON.dateStyle

    /// Shared by every response and frame (and the event stream): one configured encoder.
    static let encoder = WireJSON.encoder

    static let decoder = JSONDecoder()

    static func response(_ value: some Encodable, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) throws -> Response {
        let data = try encoder.encode(value)
        var headers = headers
        headers[.contentType] = "application/json; charset=utf-8"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// Reads at most `maxBytes` of body.
    static func collectBody(_ request: Request, maxBytes: Int) async throws -> ByteBuffer {
        do {
            return try await request.body.collect(upTo: maxBytes)
        } catch is NIOTooManyBytesError {
            throw ParleyError.tooLarge("Request body exceeds \(maxBytes) bytes.", code: "body_too_large")
        }
    }

    /// Decodes a JSON object body into `T`, refusing bodies that are too large, not UTF-8, not a JSON
    /// object, carrying unknown fields, or with fields of the wrong type. Each failure has its own code.
    static func decode<T: StrictDecodable>(_ type: T.Type, from request: Request, maxBytes: Int) async throws -> T {
        let buffer = try await collectBody(request, maxBytes: maxBytes)
        return try decode(type, from: Data(buffer: buffer))
    }

    static func decode<T: StrictDecodable>(_ type: T.Type, from data: Data) throws -> T {
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

extension Request {
    /// The parsed `limit`-style integer query parameter; a present but unparsable value is an error.
    func queryInt(_ name: String) throws -> Int? {
        guard let raw = uri.queryParameters[name[...]] else { return nil }
        guard let value = Int(raw) else {
            throw ParleyError.invalid("Query parameter \(name) must be an integer.", code: "invalid_query")
        }
        return value
    }
}

extension Parameters {
    /// A path id; malformed ids are a 400 with a clear code rather than a router error.
    func uuid(_ name: String) throws -> UUID {
        guard let raw = self.get(name), let id = UUID(canonical: raw) else {
            throw ParleyError.invalid("\(name) must be a UUID.", code: "invalid_id")
        }
        return id
    }
}
