import ParleyTestSupport
import Testing

@Suite("ChatStore conformance: which adapters ran")
struct AdapterCoverageTests {
    @Test("PostgreSQL runs the suite when every integration suite is required (CI)")
    func postgresIsCovered() {
        if TestEnvironment.requireAll {
            #expect(
                StoreFactory.all.contains { $0.name == "PostgreSQL" },
                "PARLEY_TEST_REQUIRE_ALL=1 but PARLEY_TEST_POSTGRES_URL is not set: the PostgreSQL adapter would go untested"
            )
        }
    }
}
