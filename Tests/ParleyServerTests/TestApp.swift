import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import ParleyCore
import ParleyServer
import ParleyTestSupport
import Testing

/// A Parley node on a throwaway data directory, driven through HummingbirdTesting.
struct TestApp {
    static let jwtSecret = "test-secret-test-secret-test-secret-0123456789"

    static func configuration(_ directory: TemporaryDirectory) -> ParleyConfiguration {
        var config = ParleyConfiguration()
        config.dataDirectory = directory.path
        config.port = 0
        config.bcryptCost = 4
        config.jwtSecret = jwtSecret
        config.sqliteSynchronousFull = false
        config.rateLimits = .unlimited
        return config
    }

    /// Runs `body` against a fresh node. `configure` adjusts the configuration first.
    static func run<T: Sendable>(
        _ setup: TestingSetup = .router,
        configure: (inout ParleyConfiguration) -> Void = { _ in },
        _ body: @Sendable (Client) async throws -> T
    ) async throws -> T {
        let directory = try TemporaryDirectory(prefix: "parley-server")
        defer { directory.remove() }
        var config = configuration(directory)
        configure(&config)
        let app = try await buildApplication(configuration: config, logger: .quiet)
        return try await app.test(setup) { client in try await body(Client(client: client)) }
    }

    /// A thin JSON client over the test client.
    struct Client {
        let client: any TestClientProtocol

        /// The live server's port (only with `.live`).
        var port: Int { client.port ?? 0 }

        struct Reply {
            var status: HTTPResponse.Status
            var headers: HTTPFields
            var body: ByteBuffer
            var json: JSONValue { JSONValue.parse(Data(buffer: body)) ?? .null }
            var text: String { String(buffer: body) }
            var errorCode: String? { json["error"]["code"].string }
        }

        @discardableResult
        func request(
            _ method: HTTPRequest.Method,
            _ path: String,
            token: String? = nil,
            json: String? = nil,
            raw: ByteBuffer? = nil,
            headers: HTTPFields = [:]
        ) async throws -> Reply {
            var headers = headers
            if let token { headers[.authorization] = "Bearer \(token)" }
            var body: ByteBuffer?
            if let json {
                body = ByteBuffer(string: json)
                headers[.contentType] = "application/json"
            } else if let raw {
                body = raw
                headers[.contentType] = "application/json"
            }
            return try await client.execute(uri: path, method: method, headers: headers, body: body) { response in
                Reply(status: response.status, headers: response.headers, body: response.body)
            }
        }

        struct Account {
            var id: String
            var username: String
            var accessToken: String
            var refreshToken: String
        }

        func register(_ username: String, password: String = "password123") async throws -> Account {
            let reply = try await request(
                .post,
                "/api/v1/auth/register",
                json: #"{"username":"\#(username)","email":"\#(username)@example.com","password":"\#(password)"}"#
            )
            try #require(reply.status == .created, "register \(username): \(reply.status) \(reply.json)")
            return Account(
                id: try #require(reply.json["user"]["id"].string),
                username: username,
                accessToken: try #require(reply.json["accessToken"].string),
                refreshToken: try #require(reply.json["refreshToken"].string)
            )
        }

        func createGroup(_ owner: Account, name: String = "Team", members: [Account] = [], passcode: String? = nil) async throws -> String {
            let ids = members.map { "\"\($0.id)\"" }.joined(separator: ",")
            let pass = passcode.map { #","passcode":"\#($0)""# } ?? ""
            let reply = try await request(
                .post,
                "/api/v1/conversations",
                token: owner.accessToken,
                json: #"{"type":"group","name":"\#(name)","memberIds":[\#(ids)]\#(pass)}"#
            )
            try #require(reply.status == .created, "create group: \(reply.status) \(reply.json)")
            return try #require(reply.json["conversation"]["id"].string)
        }

        @discardableResult
        func send(_ sender: Account, _ conversation: String, _ body: String, clientMsgId: String? = nil) async throws -> Reply {
            let key = clientMsgId.map { #","clientMsgId":"\#($0)""# } ?? ""
            return try await request(
                .post,
                "/api/v1/conversations/\(conversation)/messages",
                token: sender.accessToken,
                json: #"{"body":"\#(body)"\#(key)}"#
            )
        }
    }
}
