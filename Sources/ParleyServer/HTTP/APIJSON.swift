import Foundation
import Hummingbird
import NIOCore
import ParleyCore

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
        try StrictJSON.decode(type, from: data)
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
