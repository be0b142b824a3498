import ParleyCore
import Testing

/// Expects `body` to throw a `ParleyError` with `code`.
public func expectParleyError<R>(
    _ code: String,
    sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () async throws -> R
) async {
    let error = await #expect(throws: ParleyError.self, sourceLocation: sourceLocation) { _ = try await body() }
    #expect(error?.code == code, sourceLocation: sourceLocation)
}
