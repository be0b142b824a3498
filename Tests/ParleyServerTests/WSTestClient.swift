import Foundation
import HTTPTypes
import HummingbirdWSClient
import Logging
import NIOCore
import NIOWebSocket
import ParleyCore
import ParleyTestSupport
import Testing

/// What a test WebSocket client has seen.
enum WSEvent: Sendable {
    case frame(JSONValue)
    case closed(code: Int?)
}

struct WSTimeout: Error, CustomStringConvertible {
    var waitingFor: String
    var description: String { "timed out waiting for \(waitingFor)" }
}

/// Frames received, waited for one at a time with a timeout.
actor Mailbox {
    private var items: [WSEvent] = []
    private var waiter: (id: UUID, continuation: CheckedContinuation<WSEvent, any Error>)?

    func put(_ item: WSEvent) {
        if let waiter {
            self.waiter = nil
            waiter.continuation.resume(returning: item)
        } else {
            items.append(item)
        }
    }

    func take(timeout: Duration, what: String) async throws -> WSEvent {
        if !items.isEmpty { return items.removeFirst() }
        let id = UUID()
        return try await withCheckedThrowingContinuation { continuation in
            waiter = (id, continuation)
            Task {
                try? await Task.sleep(for: timeout)
                self.expire(id, what: what)
            }
        }
    }

    private func expire(_ id: UUID, what: String) {
        guard let waiter, waiter.id == id else { return }
        self.waiter = nil
        waiter.continuation.resume(throwing: WSTimeout(waitingFor: what))
    }
}

/// A real WebSocket client (HummingbirdWSClient) for live-server tests.
final class WSTestClient: Sendable {
    let mailbox = Mailbox()
    private let outbound = Promise<WebSocketOutboundWriter>()
    private let task: Task<Void, Never>

    private init(url: String, headers: HTTPFields) {
        let mailbox = self.mailbox
        let outbound = self.outbound
        var configuration = WebSocketClientConfiguration()
        configuration.additionalHeaders = headers
        configuration.maxFrameSize = 1 << 20
        task = Task {
            do {
                let close = try await WebSocketClient.connect(url: url, configuration: configuration, logger: .quiet) { inbound, writer, _ in
                    outbound.resolve(.success(writer))
                    for try await message in inbound.messages(maxSize: 1 << 20) {
                        if case .text(let text) = message, let json = JSONValue.parse(Data(text.utf8)) {
                            await mailbox.put(.frame(json))
                        } else {
                            await mailbox.put(.frame(.string("<non-JSON frame>")))
                        }
                    }
                }
                await mailbox.put(.closed(code: close.map { Int(Self.code($0.closeCode)) }))
            } catch {
                outbound.resolve(.failure(error))
                await mailbox.put(.closed(code: nil))
            }
        }
    }

    /// Connects; with a token the upgrade carries `Authorization: Bearer`.
    static func connect(port: Int, token: String? = nil, headers: HTTPFields = [:]) async throws -> WSTestClient {
        var headers = headers
        if let token { headers[.authorization] = "Bearer \(token)" }
        let client = WSTestClient(url: "ws://127.0.0.1:\(port)/api/v1/ws", headers: headers)
        _ = try await client.outbound.value
        return client
    }

    /// Connects with a token and waits for `hello`.
    static func ready(port: Int, token: String) async throws -> WSTestClient {
        let client = try await connect(port: port, token: token)
        let hello = try await client.next()
        try #require(hello["type"].string == "hello", "expected hello, got \(hello)")
        return client
    }

    func send(_ json: String) async throws {
        try await outbound.value.write(.text(json))
    }

    func sendBinary(_ bytes: [UInt8]) async throws {
        try await outbound.value.write(.binary(ByteBuffer(bytes: bytes)))
    }

    /// The next frame; fails if the socket closes or nothing comes in time.
    func next(timeout: Duration = .seconds(10)) async throws -> JSONValue {
        switch try await mailbox.take(timeout: timeout, what: "a frame") {
        case .frame(let json): return json
        case .closed(let code):
            Issue.record("socket closed (code \(code.map(String.init) ?? "none")) while a frame was expected")
            throw WSTimeout(waitingFor: "a frame (socket closed)")
        }
    }

    /// The next frame of `type`, skipping (and returning) frames of the types in `skipping`.
    func next(_ type: String, skipping: Set<String> = ["presence", "typing", "receipt", "conversation"], timeout: Duration = .seconds(10))
        async throws
        -> JSONValue
    {
        while true {
            let frame = try await next(timeout: timeout)
            if frame["type"].string == type { return frame }
            if let other = frame["type"].string, skipping.contains(other) { continue }
            Issue.record("expected a \(type) frame, got \(frame)")
            throw WSTimeout(waitingFor: type)
        }
    }

    /// Waits for the socket to close and returns the close code (nil if none was sent).
    func closed(timeout: Duration = .seconds(10)) async throws -> Int? {
        while true {
            if case .closed(let code) = try await mailbox.take(timeout: timeout, what: "close") { return code }
        }
    }

    func close() async {
        task.cancel()
        _ = await task.value
    }

    private static func code(_ code: WebSocketErrorCode) -> UInt16 {
        var buffer = ByteBuffer()
        buffer.write(webSocketErrorCode: code)
        return buffer.readInteger(as: UInt16.self) ?? 0
    }
}
