import Foundation
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// A WebSocket client on a plain POSIX socket, for what a well-behaved client library will not do:
/// stop reading altogether, or send frames that break the protocol. Blocking calls run on NIO's
/// thread pool and always have a timeout.
final class RawWebSocket: Sendable {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    let fd: Int32

    private init(fd: Int32) {
        self.fd = fd
    }

    /// Connects to 127.0.0.1:`port`, optionally with a tiny receive buffer, and performs the upgrade.
    /// Returns the socket and the HTTP status line of the answer.
    static func connect(port: Int, token: String?, receiveBuffer: Int32? = nil) async throws -> (RawWebSocket, String) {
        try await NIOThreadPool.singleton.runIfActive {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw Failure(description: "socket() failed") }
            if var size = receiveBuffer {
                setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard connected == 0 else {
                Glibc.close(fd)
                throw Failure(description: "connect() failed")
            }
            let socket = RawWebSocket(fd: fd)
            var request = "GET /api/v1/ws HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            request += "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            if let token { request += "Authorization: Bearer \(token)\r\n" }
            request += "\r\n"
            try socket.writeAll(Array(request.utf8))
            var response: [UInt8] = []
            while !response.suffix(4).elementsEqual([13, 10, 13, 10]) {
                guard let byte = try socket.readByte(timeoutMs: 5000) else { throw Failure(description: "connection closed during upgrade") }
                response.append(byte)
            }
            let statusLine = String(decoding: response, as: UTF8.self).split(separator: "\r\n").first.map(String.init) ?? ""
            return (socket, statusLine)
        }
    }

    /// A client frame (masked, as RFC 6455 requires of clients unless `masked` is false).
    static func frame(opcode: UInt8, payload: [UInt8], fin: Bool = true, masked: Bool = true, declaredLength: UInt64? = nil) -> [UInt8] {
        var bytes: [UInt8] = [(fin ? 0x80 : 0) | opcode]
        let length = declaredLength ?? UInt64(payload.count)
        let maskBit: UInt8 = masked ? 0x80 : 0
        if length < 126 {
            bytes.append(maskBit | UInt8(length))
        } else if length <= 0xFFFF {
            bytes.append(maskBit | 126)
            bytes += [UInt8(length >> 8), UInt8(length & 0xFF)]
        } else {
            bytes.append(maskBit | 127)
            bytes += (0..<8).reversed().map { UInt8((length >> (8 * UInt64($0))) & 0xFF) }
        }
        guard masked else { return bytes + payload }
        let key: [UInt8] = [0x12, 0x34, 0x56, 0x78]
        return bytes + key + payload.enumerated().map { $0.element ^ key[$0.offset % 4] }
    }

    func send(_ bytes: [UInt8]) async throws {
        try await NIOThreadPool.singleton.runIfActive { try self.writeAll(bytes) }
    }

    /// Reads everything until the server closes the connection or `timeout` passes without any
    /// byte arriving. Returns the number of bytes read and whether the connection was closed.
    func drain(timeout: Duration) async throws -> (bytes: Int, closed: Bool) {
        let ms = Int32(timeout.components.seconds * 1000)
        return try await NIOThreadPool.singleton.runIfActive {
            var total = 0
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                guard try self.waitReadable(timeoutMs: ms) else { return (total, false) }
                let n = recv(self.fd, &buffer, buffer.count, 0)
                if n == 0 { return (total, true) }
                if n < 0 {
                    if errno == ECONNRESET { return (total, true) }
                    throw Failure(description: "recv failed: \(errno)")
                }
                total += n
            }
        }
    }

    func close() {
        Glibc.close(fd)
    }

    private func writeAll(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw Failure(description: "send failed: \(errno)") }
            offset += n
        }
    }

    private func readByte(timeoutMs: Int32) throws -> UInt8? {
        guard try waitReadable(timeoutMs: timeoutMs) else { throw Failure(description: "read timed out") }
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, 0)
        return n == 1 ? byte : nil
    }

    private func waitReadable(timeoutMs: Int32) throws -> Bool {
        var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&descriptor, 1, timeoutMs)
        if ready < 0 { throw Failure(description: "poll failed: \(errno)") }
        return ready > 0
    }
}
