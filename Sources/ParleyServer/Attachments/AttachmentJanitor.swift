import Foundation
import Logging
import ParleyBlobs
import ParleyCore
import ServiceLifecycle

/// Removes the blobs nobody can reach any more, then their rows: attachments of deleted messages
/// and conversations (right after the deletion, when poked, or on the next round), uploads never
/// sent within the limit, and uploads that died half-way. The row goes only once its blobs are
/// gone, so a failure (storage down, node killed) leaves the row for the next round: nothing is
/// left behind in storage without a row that names it.
final class AttachmentJanitor: Service, Sendable {
    private let store: any AttachmentStore
    private let blobs: any BlobStore
    private let unsentAfter: Duration
    private let interval: Duration
    private let logger: Logger
    private let wake: AsyncStream<Void>.Continuation
    private let wakes: AsyncStream<Void>
    /// Uploads still `uploading` after this long died with their node.
    static let abandonedAfter: Duration = .seconds(3600)

    init(store: any AttachmentStore, blobs: any BlobStore, unsentAfter: Duration, interval: Duration, logger: Logger) {
        self.store = store
        self.blobs = blobs
        self.unsentAfter = unsentAfter
        self.interval = interval
        self.logger = logger
        (wakes, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Asks for a round now (after a deletion).
    func poke() {
        wake.yield()
    }

    func run() async throws {
        let interval = self.interval
        let wake = self.wake
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                wake.yield()
            }
        }
        defer { ticker.cancel() }
        await withGracefulShutdownHandler {
            for await _ in wakes.cancelOnGracefulShutdown() {
                await sweep()
            }
        } onGracefulShutdown: {
            wake.finish()
        }
    }

    /// One round; returns how many attachments were removed.
    @discardableResult
    func sweep(now: Date = .now) async -> Int {
        var removed = 0
        do {
            while true {
                let batch = try await store.disposableAttachments(
                    unsentBefore: now.addingTimeInterval(-unsentAfter.inSeconds),
                    abandonedBefore: now.addingTimeInterval(-Self.abandonedAfter.inSeconds), limit: 100)
                var gone: [UUID] = []
                for attachment in batch {
                    do {
                        try await blobs.delete(attachment.blobKey)
                        try await blobs.delete(attachment.thumbnailKey)
                        gone.append(attachment.id)
                    } catch {
                        logger.warning(
                            "could not remove an attachment's blob; retrying later",
                            metadata: ["parley.attachment": "\(attachment.id.lowercased)", "parley.error": "\(error)"])
                    }
                }
                try await store.forgetAttachments(ids: gone)
                removed += gone.count
                if batch.count < 100 || gone.isEmpty { break }
            }
        } catch {
            logger.warning("attachment cleanup failed; retrying later", metadata: ["parley.error": "\(error)"])
        }
        if removed > 0 { logger.debug("removed attachments", metadata: ["parley.count": "\(removed)"]) }
        return removed
    }
}
