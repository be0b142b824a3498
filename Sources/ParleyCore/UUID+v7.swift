import Foundation

extension UUID {
    /// A time-ordered UUID (RFC 9562 version 7): 48 bits of Unix milliseconds, then random bits.
    /// Time-ordered keys keep B-tree inserts at the right edge of the index.
    public static func v7(now: Date = .now) -> UUID {
        let millis = UInt64(max(0, now.timeIntervalSince1970 * 1000))
        var rng = SystemRandomNumberGenerator()
        let randA = rng.next() as UInt64
        let randB = rng.next() as UInt64
        return UUID(
            uuid: (
                UInt8(truncatingIfNeeded: millis >> 40),
                UInt8(truncatingIfNeeded: millis >> 32),
                UInt8(truncatingIfNeeded: millis >> 24),
                UInt8(truncatingIfNeeded: millis >> 16),
                UInt8(truncatingIfNeeded: millis >> 8),
                UInt8(truncatingIfNeeded: millis),
                0x70 | UInt8(truncatingIfNeeded: randA >> 60),
                UInt8(truncatingIfNeeded: randA >> 52),
                0x80 | UInt8(truncatingIfNeeded: randA >> 46) & 0x3F,
                UInt8(truncatingIfNeeded: randA >> 38),
                UInt8(truncatingIfNeeded: randB >> 40),
                UInt8(truncatingIfNeeded: randB >> 32),
                UInt8(truncatingIfNeeded: randB >> 24),
                UInt8(truncatingIfNeeded: randB >> 16),
                UInt8(truncatingIfNeeded: randB >> 8),
                UInt8(truncatingIfNeeded: randB)
            ))
    }

    /// Lower-case canonical form, the one used on the wire and in the stores.
    public var lowercased: String { uuidString.lowercased() }
}

extension Date {
    /// Milliseconds since 1970, the precision every store keeps.
    public var millis: Int64 { Int64((timeIntervalSince1970 * 1000).rounded(.down)) }

    /// This time at millisecond precision, as it will read back from a store.
    public var truncatedToMillis: Date { Date(timeIntervalSince1970: TimeInterval(millis) / 1000) }
}
