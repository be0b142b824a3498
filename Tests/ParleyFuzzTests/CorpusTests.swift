import Foundation
import ParleyFuzz
import Testing

/// Every committed fuzz input (`Fuzz/corpus/<harness>/`: the seeds, and each input that once found
/// a bug) through its harness, without the fuzzer: a parser that crashes or breaks a property on
/// one of them fails the run (it stops the test process).
@Suite("Fuzz corpora replayed")
struct CorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Fuzz/corpus").standardized

    @Test("each harness's corpus runs clean, and every harness has seeds", arguments: Harness.allCases)
    func replay(harness: Harness) throws {
        let directory = Self.corpus.appendingPathComponent(harness.rawValue)
        let files = try FileManager.default.contentsOfDirectory(at: directory, includingPropertiesForKeys: nil)
        #expect(files.count >= 5, "\(harness.rawValue) has \(files.count) seeds")
        for file in files.sorted(by: { $0.path < $1.path }) {
            harness.run(Array(try Data(contentsOf: file)))
        }
    }
}
