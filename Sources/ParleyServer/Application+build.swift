import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import ParleyCore

/// Builds a Parley node from its configuration: the adapters (`Adapters`), the domain services and
/// gateway (`Node`), the routes (`Routes.swift`) and the services the application runs. `parley serve`
/// and the tests both go through here.
public func buildApplication(configuration: ParleyConfiguration, logger: Logger) async throws -> some ApplicationProtocol {
    _ = ParleyMetrics.registry
    try configuration.validate()
    try FileManager.default.createDirectory(atPath: configuration.dataDirectory, withIntermediateDirectories: true)

    let adapters = try Adapters.make(configuration: configuration, logger: logger)
    let node = try await Node(configuration: configuration, adapters: adapters, logger: logger)
    let gateway = node.gateway
    var app = Application(
        router: buildRouter(node),
        server: HTTPServerBuilder { responder in GatewayServerChannel(responder: responder, gateway: gateway) },
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "parley"),
        services: node.services,
        logger: logger
    )
    app.beforeServerStarts { try await node.prepare() }
    return app
}

/// The embedded mode's access-token key: generated once (512 random bits) and kept, readable by
/// the owner only, in the data directory so that tokens survive restarts.
public enum JWTSecretFile {
    public static func loadOrCreate(directory: String, logger: Logger) throws -> String {
        let path = (directory as NSString).appendingPathComponent("jwt-secret")
        if let existing = try? String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines),
            existing.utf8.count >= 32
        {
            return existing
        }
        let secret = AccountService.makeRefreshToken() + AccountService.makeRefreshToken()
        guard FileManager.default.createFile(atPath: path, contents: Data(secret.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw ConfigurationError("cannot write the JWT key to \(path)")
        }
        logger.info("generated a new JWT signing key", metadata: ["parley.path": "\(path)"])
        return secret
    }
}

/// The web client: static files (HTML, CSS, JavaScript modules) served at `/`.
enum WebClient {
    /// The copy bundled with the server, if the bundle has one.
    static var bundledRoot: String? {
        guard let url = Bundle.module.url(forResource: "web", withExtension: nil, subdirectory: "Resources"),
            FileManager.default.fileExists(atPath: url.appendingPathComponent("index.html").path)
        else { return nil }
        return url.path
    }
}
