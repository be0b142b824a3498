import Foundation
import NIOPosix

#if Images
    import CVips
#endif

/// What Parley learns from an image upload: its size as displayed and a small WebP preview.
public struct Thumbnail: Sendable, Equatable {
    public var width: Int
    public var height: Int
    /// WebP, at most `Thumbnailer.maxSide` on the long side, without EXIF/XMP/ICC metadata.
    public var bytes: [UInt8]
}

/// Thumbnails through libvips, on a thread pool (never on an event loop or the Swift concurrency
/// pool: decoding a large photo takes tens of milliseconds of CPU). Built only with the `Images`
/// trait; without it `isAvailable` is false and every image is stored without a thumbnail.
public struct Thumbnailer: Sendable {
    public static let maxSide = 400
    /// Larger images are stored without a thumbnail rather than decoded (a decompression bomb
    /// is a few kilobytes that decode to gigabytes).
    public static let maxPixels: Int64 = 50_000_000

    private let threadPool: NIOThreadPool

    public init(threadPool: NIOThreadPool = .singleton) {
        self.threadPool = threadPool
    }

    /// Whether this build makes thumbnails (the `Images` trait, and libvips started).
    public static var isAvailable: Bool {
        #if Images
            return started
        #else
            return false
        #endif
    }

    #if Images
        private static let started: Bool = parley_vips_start() == 0
    #endif

    public enum Failure: Error, Equatable {
        /// Built without the `Images` trait.
        case unavailable
        /// libvips could not read the image (corrupt, truncated, too large): the reason.
        case unreadable(String)
    }

    /// The thumbnail of the image file at `path`.
    public func thumbnail(ofFileAt path: String) async throws -> Thumbnail {
        #if Images
            guard Self.isAvailable else { throw Failure.unavailable }
            return try await threadPool.runIfActive {
                var out = parley_thumbnail()
                let status = parley_vips_thumbnail(path, Int32(Self.maxSide), Self.maxPixels, &out)
                defer { if let bytes = out.bytes { parley_vips_free(bytes) } }
                guard status == 0, let bytes = out.bytes else {
                    let reason = withUnsafeBytes(of: out.error) { raw in
                        String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
                    }
                    throw Failure.unreadable(reason.trimmingCharacters(in: .whitespacesAndNewlines))
                }
                let copy = Array(UnsafeRawBufferPointer(start: bytes, count: out.length))
                return Thumbnail(width: Int(out.width), height: Int(out.height), bytes: WebP.removingMetadata(copy))
            }
        #else
            throw Failure.unavailable
        #endif
    }
}

/// The WebP container (RIFF), as far as thumbnails need it.
enum WebP {
    /// The image without its EXIF, XMP and ICC chunks (and their VP8X flags). libvips writes a
    /// small EXIF block of its own (orientation, resolution) even when told to strip metadata; a
    /// thumbnail carries none. Anything that is not a well-formed WebP comes back unchanged.
    static func removingMetadata(_ bytes: [UInt8]) -> [UInt8] {
        guard bytes.count >= 12, Array(bytes[0..<4]) == Array("RIFF".utf8), Array(bytes[8..<12]) == Array("WEBP".utf8) else {
            return bytes
        }
        var out = Array(bytes[0..<12])
        var offset = 12
        while offset + 8 <= bytes.count {
            let tag = String(decoding: bytes[offset..<offset + 4], as: UTF8.self)
            let size = Int(bytes[offset + 4]) | Int(bytes[offset + 5]) << 8 | Int(bytes[offset + 6]) << 16 | Int(bytes[offset + 7]) << 24
            let end = offset + 8 + size + (size & 1)
            guard end <= bytes.count || (end == bytes.count + 1 && size & 1 == 1) else { return bytes }
            var chunk = Array(bytes[offset..<min(end, bytes.count)])
            switch tag {
            case "EXIF", "XMP ", "ICCP":
                break
            case "VP8X" where chunk.count > 8:
                chunk[8] &= ~UInt8(0x20 | 0x08 | 0x04)  // ICC, EXIF and XMP present
                out += chunk
            default:
                out += chunk
            }
            offset = end
        }
        let riffSize = UInt32(out.count - 8)
        for index in 0..<4 { out[4 + index] = UInt8(truncatingIfNeeded: riffSize >> (8 * UInt32(index))) }
        return out
    }
}
