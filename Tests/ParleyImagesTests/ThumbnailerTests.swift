import Foundation
import ParleyImages
import ParleyTestSupport
import Testing

/// The images in tests/fixtures/images (scripts/make-image-fixtures.py made them).
private func fixture(_ name: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("tests/fixtures/images/\(name)").path
}

@Suite("Thumbnails (libvips, the Images trait)")
struct ThumbnailerTests {
    let thumbnailer = Thumbnailer()

    @Test("built with the Images trait when CI requires every suite")
    func available() {
        if TestEnvironment.requireAll { #expect(Thumbnailer.isAvailable, "build with --traits Images (libvips-dev)") }
    }

    @Test(
        "a thumbnail fits 400 px on its long side, keeps the picture's proportions and is WebP",
        .enabled(if: Thumbnailer.isAvailable, "needs libvips: a build with --traits Images (CI builds with it and fails if it is missing)"),
        arguments: [
            ("gps.jpg", 800, 600, 400, 300),
            ("sideways.jpg", 600, 800, 300, 400),  // EXIF orientation 6: shown upright
            ("gps.png", 640, 480, 400, 300),
            ("animated.gif", 300, 200, 300, 200),  // the first frame; never enlarged
            ("square.webp", 500, 500, 400, 400),
        ])
    func sizes(name: String, width: Int, height: Int, thumbWidth: Int, thumbHeight: Int) async throws {
        let thumbnail = try await thumbnailer.thumbnail(ofFileAt: fixture(name))
        #expect(thumbnail.width == width && thumbnail.height == height)
        #expect(Array(thumbnail.bytes.prefix(4)) == Array("RIFF".utf8) && Array(thumbnail.bytes[8..<12]) == Array("WEBP".utf8))
        // The thumbnail's own size, read back through libvips.
        let directory = try TemporaryDirectory(prefix: "parley-thumb")
        defer { directory.remove() }
        let path = directory.file("thumb.webp")
        _ = FileManager.default.createFile(atPath: path, contents: Data(thumbnail.bytes))
        let again = try await thumbnailer.thumbnail(ofFileAt: path)
        #expect(again.width == thumbWidth && again.height == thumbHeight)
    }

    @Test(
        "no EXIF in a thumbnail: the GPS position and camera of the original are gone",
        .enabled(if: Thumbnailer.isAvailable, "needs libvips: a build with --traits Images (CI builds with it and fails if it is missing)"),
        arguments: ["gps.jpg", "gps.png"])
    func noMetadata(name: String) async throws {
        let original = try Data(contentsOf: URL(fileURLWithPath: fixture(name)))
        #expect(original.range(of: Data("ParleyCam".utf8)) != nil, "the fixture lost its EXIF")
        let thumbnail = Data(try await thumbnailer.thumbnail(ofFileAt: fixture(name)).bytes)
        for marker in ["EXIF", "Exif", "XMP ", "ICCP", "ParleyCam"] {
            #expect(thumbnail.range(of: Data(marker.utf8)) == nil, "the thumbnail holds \(marker)")
        }
    }

    @Test(
        "a truncated JPEG, text, and a missing file: an error, no thumbnail",
        .enabled(if: Thumbnailer.isAvailable, "needs libvips: a build with --traits Images (CI builds with it and fails if it is missing)"))
    func unreadable() async throws {
        let directory = try TemporaryDirectory(prefix: "parley-thumb")
        defer { directory.remove() }
        let text = directory.file("notes.txt")
        _ = FileManager.default.createFile(atPath: text, contents: Data("not an image\n".utf8))
        for path in [fixture("truncated.jpg"), text, directory.file("missing.png")] {
            await #expect(throws: Thumbnailer.Failure.self) { try await thumbnailer.thumbnail(ofFileAt: path) }
        }
    }

    @Test(
        "without the Images trait nothing is thumbnailed",
        .disabled(if: Thumbnailer.isAvailable, "checks the build without the Images trait, where no thumbnails are made"))
    func withoutTrait() async throws {
        await #expect(throws: Thumbnailer.Failure.unavailable) { try await thumbnailer.thumbnail(ofFileAt: fixture("gps.jpg")) }
    }
}
