import ParleyCore
import Synchronization
import Testing

@Suite("Group commit")
struct GroupCommitQueueTests {
    @Test("concurrent submissions share commits, and every caller gets its own result")
    func batches() async throws {
        let batchSizes = Mutex<[Int]>([])
        let queue = GroupCommitQueue<Int, Int>(name: "test") { requests in
            batchSizes.withLock { $0.append(requests.count) }
            try await Task.sleep(for: .milliseconds(2))
            return requests.map { .success($0 * 10) }
        }
        let results = try await withThrowingTaskGroup(of: (Int, Int).self) { group in
            for i in 0..<300 { group.addTask { (i, try await queue.submit(i)) } }
            return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
        }
        #expect(results.count == 300)
        #expect(results.allSatisfy { $0.value == $0.key * 10 })
        let sizes = batchSizes.withLock { $0 }
        #expect(sizes.reduce(0, +) == 300)
        #expect(sizes.count < 300, "some commits carried several requests")
    }

    @Test("one failing request fails alone; a failing commit fails its whole batch and the queue recovers")
    func failures() async throws {
        struct Boom: Error {}
        let queue = GroupCommitQueue<Int, Int>(name: "test_failures") { requests in
            if requests.contains(-1) { throw Boom() }
            return requests.map { $0 == 13 ? .failure(Boom()) : .success($0) }
        }
        await #expect(throws: Boom.self) { try await queue.submit(13) }
        #expect(try await queue.submit(14) == 14)
        await #expect(throws: Boom.self) { try await queue.submit(-1) }
        #expect(try await queue.submit(15) == 15)
    }
}
